//! The opted-in pods the controller reports on: a metadata-only watch (a pod costs a few hundred
//! bytes) into a per-namespace index, and the reconciles it asks for. Pod events only mark their
//! namespace; once a second the bindings of the marked namespaces are reconciled, so a burst of
//! 1,000 pods is one reconcile per binding, not 1,000.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

use crate::binding::{
    BINDING_ANNOTATION, INJECTED_ANNOTATION, INJECTED_HASH_ANNOTATION, MlflowWorkspaceBinding,
    TRACK_LABEL,
};
use crate::binding_store::BindingStore;
use crate::metrics::{Metrics, PodsLabels};
use crate::tracking::{PodState, Report};
use crate::webhook::{IndexWriter, Keyed, NamespaceIndex, Slice};

mod compact;

pub use compact::CompactPod;

/// Opted-in pods by namespace, what the controller reads of them only.
pub type PodIndex = NamespaceIndex<CompactPod>;

/// How often marked namespaces are turned into reconciles.
const TICK: Duration = Duration::from_secs(1);

/// The most watch events applied to the index at once.
const BATCH: usize = 1024;

/// The annotations the controller reads; every other one is dropped from memory.
const KEPT_ANNOTATIONS: [&str; 3] = [
    BINDING_ANNOTATION,
    INJECTED_ANNOTATION,
    INJECTED_HASH_ANNOTATION,
];

/// Namespaces whose pods changed since the last tick.
#[derive(Default)]
struct Marks {
    /// A (re)list completed: every binding is due.
    all: bool,
    namespaces: BTreeSet<String>,
}

/// The pod side of one term of leadership.
#[derive(Clone)]
pub(super) struct Pods {
    pub index: PodIndex,
    marks: Arc<Mutex<Marks>>,
    /// Bindings whose `pods` gauge is set, so a deleted binding's can be removed.
    reported: Arc<Mutex<HashSet<ObjectRef<MlflowWorkspaceBinding>>>>,
}

/// The event with its pod made compact: of the annotations, our own only (a pod's others can
/// be kilobytes of someone else's data).
fn compact(event: watcher::Event<PartialObjectMeta<Pod>>) -> watcher::Event<CompactPod> {
    let c = |p| CompactPod::new(p, &KEPT_ANNOTATIONS);
    match event {
        watcher::Event::Apply(p) => watcher::Event::Apply(c(p)),
        watcher::Event::Delete(p) => watcher::Event::Delete(c(p)),
        watcher::Event::InitApply(p) => watcher::Event::InitApply(c(p)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

impl Pods {
    pub fn new() -> (Self, IndexWriter<CompactPod>) {
        let (index, writer) = PodIndex::new();
        let pods = Self {
            index,
            marks: Arc::default(),
            reported: Arc::default(),
        };
        (pods, writer)
    }

    fn marks(&self) -> std::sync::MutexGuard<'_, Marks> {
        self.marks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Watches opted-in pods (of `namespace`, or all) into the index until dropped.
    pub async fn watch(
        self,
        client: Client,
        namespace: Option<String>,
        mut writer: IndexWriter<CompactPod>,
    ) {
        // An Api of PartialObjectMeta makes metadata-only requests.
        let api: Api<PartialObjectMeta<Pod>> = match &namespace {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::all(client),
        };
        let config = crate::webhook::paged_watch().labels(&format!("{TRACK_LABEL}=true"));
        let events = watcher(api, config).backoff(crate::webhook::outage_backoff());
        // What has arrived is applied together: a job's pods come and go by the thousand.
        let mut batches = std::pin::pin!(events.ready_chunks(BATCH));
        while let Some(batch) = batches.next().await {
            // Errors are retried by the backoff; the index keeps its last view meanwhile.
            let events: Vec<_> = batch.into_iter().flatten().map(compact).collect();
            self.mark(&events);
            writer.apply_all(events);
        }
    }

    fn mark(&self, events: &[watcher::Event<CompactPod>]) {
        let mut marks = self.marks();
        for event in events {
            match event {
                watcher::Event::Apply(p) | watcher::Event::Delete(p) => {
                    if !marks.namespaces.contains(p.namespace_key()) {
                        marks.namespaces.insert(p.namespace_key().to_string());
                    }
                }
                watcher::Event::InitDone => marks.all = true,
                watcher::Event::Init | watcher::Event::InitApply(_) => {}
            }
        }
    }

    /// Every tick, the bindings of the namespaces whose pods changed (of `namespace` only, when
    /// given, as the pod watch); also drops the gauge of bindings that are gone.
    pub fn triggers(
        self,
        bindings: BindingStore,
        namespace: Option<String>,
        metrics: Metrics,
    ) -> impl Stream<Item = ObjectRef<MlflowWorkspaceBinding>> + Send + 'static {
        let ticks = ticks_every(TICK);
        ticks
            .map(move |_| {
                let mut due = self.due(&bindings);
                if let Some(ns) = &namespace {
                    due.retain(|r| r.namespace.as_ref() == Some(ns));
                }
                self.forget_deleted(&bindings.store, &metrics);
                futures::stream::iter(due)
            })
            .flatten()
    }

    /// The bindings of the marked namespaces, read namespace by namespace.
    fn due(&self, bindings: &BindingStore) -> Vec<ObjectRef<MlflowWorkspaceBinding>> {
        let marks = std::mem::take(&mut *self.marks());
        let refs = |all: &[Arc<MlflowWorkspaceBinding>]| -> Vec<_> {
            all.iter().map(|b| ObjectRef::from(b.as_ref())).collect()
        };
        if marks.all {
            return refs(&bindings.store.state());
        }
        let namespaces = marks.namespaces.iter();
        namespaces
            .flat_map(|ns| refs(&bindings.index.namespace(ns)))
            .collect()
    }

    /// Sets the `pods` gauge of one binding.
    pub fn report_metric(&self, b: &MlflowWorkspaceBinding, report: &Report, metrics: &Metrics) {
        let c = &report.counts;
        for state in PodState::ALL {
            let n = match state {
                PodState::Injected => c.injected,
                PodState::Stale => c.stale,
                PodState::NotInjected => c.not_injected,
            };
            metrics.pods.get_or_create(&labels(b, state)).set(n);
        }
        self.reported().insert(ObjectRef::from(b));
    }

    fn reported(&self) -> std::sync::MutexGuard<'_, HashSet<ObjectRef<MlflowWorkspaceBinding>>> {
        self.reported.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn forget_deleted(&self, bindings: &Store<MlflowWorkspaceBinding>, metrics: &Metrics) {
        let mut reported = self.reported();
        let gone: Vec<_> = reported
            .iter()
            .filter(|r| bindings.get(r).is_none())
            .cloned()
            .collect();
        for r in gone {
            for state in PodState::ALL {
                metrics.pods.remove(&PodsLabels {
                    namespace: r.namespace.clone().unwrap_or_default(),
                    binding: r.name.clone(),
                    state: state.as_str().to_string(),
                });
            }
            reported.remove(&r);
        }
    }

    /// The pods of a namespace, once the first list is in (None before: counting an empty
    /// index would report every binding's pods as gone). Compact: the counting builds each
    /// pod's metadata as it reads it.
    pub fn of_namespace(&self, namespace: &str) -> Option<Slice<CompactPod>> {
        self.index
            .is_ready()
            .then(|| self.index.namespace(namespace))
    }
}

fn labels(b: &MlflowWorkspaceBinding, state: PodState) -> PodsLabels {
    PodsLabels {
        namespace: b.namespace().unwrap_or_default(),
        binding: b.name_any(),
        state: state.as_str().to_string(),
    }
}

/// A tick every `period`, the first one a period from now.
fn ticks_every(period: Duration) -> impl Stream<Item = ()> + Send + 'static {
    futures::stream::unfold((), move |()| async move {
        tokio::time::sleep(period).await;
        Some(((), ()))
    })
}
