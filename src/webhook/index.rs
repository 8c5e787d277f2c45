//! A per-namespace index of watched objects, filled from a watcher's events.
//!
//! An admission only ever looks at the bindings of the pod's namespace. kube's reflector Store
//! can only hand out every object of the cluster, so reading a namespace through it costs one
//! copy of the whole cluster's list per admission; here a reader takes one reference-counted
//! slice of its namespace, whatever the size of the rest of the cluster.
//!
//! Events are applied as kube's reflector `Writer` applies them: `Apply`/`Delete` change one
//! object; a (re)list (`Init`, `InitApply`..., `InitDone`) is buffered and replaces the whole
//! index at once when it completes, so readers never see a half-listed cluster.
//!
//! A change copies its namespace's slice (readers keep the one they took), so a writer that may
//! see many events at once (the pod watch: a job's thousands of pods created or deleted
//! together) hands them over in batches ([`IndexWriter::apply_all`]): one copy per namespace per
//! batch, not per event.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};

use kube::Resource;
use kube::runtime::watcher;
use tokio::sync::watch;

/// One namespace's objects, sorted by name.
pub type Slice<K> = Arc<[Arc<K>]>;

type ByNamespace<K> = HashMap<String, Slice<K>>;

struct Shared<K> {
    by_namespace: RwLock<ByNamespace<K>>,
    /// True once a first complete list has been applied.
    ready: watch::Sender<bool>,
}

/// The read side: cheap to clone, shared by every admission.
pub struct NamespaceIndex<K> {
    shared: Arc<Shared<K>>,
}

impl<K> Clone for NamespaceIndex<K> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

/// The write side: applies one watcher's events.
pub struct IndexWriter<K> {
    index: NamespaceIndex<K>,
    /// A list in progress: namespace -> name -> object.
    relist: Option<HashMap<String, BTreeMap<String, Arc<K>>>>,
}

/// Where the index files an object: any Kubernetes object, or a compact copy of one.
pub trait Keyed {
    fn namespace_key(&self) -> &str;
    fn name_key(&self) -> &str;
}

impl<K: Resource> Keyed for K {
    fn namespace_key(&self) -> &str {
        self.meta().namespace.as_deref().unwrap_or_default()
    }

    fn name_key(&self) -> &str {
        self.meta().name.as_deref().unwrap_or_default()
    }
}

fn namespace_of<K: Keyed>(o: &K) -> &str {
    o.namespace_key()
}

fn name_of<K: Keyed>(o: &K) -> &str {
    o.name_key()
}

impl<K: Keyed> NamespaceIndex<K> {
    /// An empty index, not ready, and the writer that fills it.
    pub fn new() -> (Self, IndexWriter<K>) {
        let index = Self {
            shared: Arc::new(Shared {
                by_namespace: RwLock::default(),
                ready: watch::Sender::new(false),
            }),
        };
        let writer = IndexWriter {
            index: index.clone(),
            relist: None,
        };
        (index, writer)
    }

    /// A ready index holding exactly `objects` (tests, benchmarks).
    pub fn from_objects(objects: impl IntoIterator<Item = K>) -> Self {
        let (index, mut writer) = Self::new();
        writer.apply(watcher::Event::Init);
        for o in objects {
            writer.apply(watcher::Event::InitApply(o));
        }
        writer.apply(watcher::Event::InitDone);
        index
    }

    /// The objects of `namespace`, sorted by name (empty when it has none).
    pub fn namespace(&self, namespace: &str) -> Slice<K> {
        let map = self.read();
        map.get(namespace).cloned().unwrap_or_else(|| Arc::new([]))
    }

    /// One object by namespace and name.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        let objects = self.namespace(namespace);
        objects
            .iter()
            .find(|o| name_of(o.as_ref()) == name)
            .cloned()
    }

    /// How many objects the index holds across every namespace.
    pub fn len(&self) -> usize {
        self.read().values().map(|s| s.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a first complete list has been applied.
    pub fn is_ready(&self) -> bool {
        *self.shared.ready.borrow()
    }

    /// Resolves once a first complete list has been applied.
    pub fn wait_until_ready(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut ready = self.shared.ready.subscribe();
        async move {
            // An error means the writer is gone: nothing will ever fill the index.
            let _ = ready.wait_for(|r| *r).await;
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, ByNamespace<K>> {
        // A writer that panicked left a consistent map behind (it swaps whole slices).
        self.shared
            .by_namespace
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, ByNamespace<K>> {
        self.shared
            .by_namespace
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A change to one object, waiting in a batch.
enum Change<K> {
    Upsert(Arc<K>),
    Remove(K),
}

impl<K: Keyed> Change<K> {
    fn namespace(&self) -> &str {
        match self {
            Change::Upsert(o) => namespace_of(o.as_ref()),
            Change::Remove(o) => namespace_of(o),
        }
    }

    fn apply_to(&self, objects: &mut Vec<Arc<K>>) {
        match self {
            Change::Upsert(o) => upsert_into(objects, o.clone()),
            Change::Remove(o) => remove_from(objects, name_of(o)),
        }
    }
}

/// Adds `o` to `objects` (sorted by name, names unique), or replaces the one of its name.
fn upsert_into<K: Keyed>(objects: &mut Vec<Arc<K>>, o: Arc<K>) {
    match objects.binary_search_by(|x| name_of(x.as_ref()).cmp(name_of(o.as_ref()))) {
        Ok(i) => objects[i] = o,
        Err(i) => objects.insert(i, o),
    }
}

fn remove_from<K: Keyed>(objects: &mut Vec<Arc<K>>, name: &str) {
    if let Ok(i) = objects.binary_search_by(|x| name_of(x.as_ref()).cmp(name)) {
        objects.remove(i);
    }
}

impl<K: Keyed> IndexWriter<K> {
    /// Applies one watcher event.
    pub fn apply(&mut self, event: watcher::Event<K>) {
        self.apply_all(std::iter::once(event));
    }

    /// Applies watcher events in their order, as [`Self::apply`] one at a time would, each
    /// namespace's slice copied once per run of `Apply`/`Delete` events instead of once per
    /// event: per event, a namespace of 10,000 pods cost 10,000 reference counts up and down.
    pub fn apply_all(&mut self, events: impl IntoIterator<Item = watcher::Event<K>>) {
        let mut changes = Vec::new();
        for event in events {
            match event {
                watcher::Event::Apply(o) => changes.push(Change::Upsert(Arc::new(o))),
                watcher::Event::Delete(o) => changes.push(Change::Remove(o)),
                watcher::Event::Init => {
                    self.change(&mut changes);
                    self.relist = Some(HashMap::new());
                }
                watcher::Event::InitApply(o) => {
                    self.change(&mut changes);
                    self.listed(o);
                }
                watcher::Event::InitDone => {
                    self.change(&mut changes);
                    self.relisted();
                }
            }
        }
        self.change(&mut changes);
    }

    /// Makes `changes`, each namespace's in their order, and empties it.
    fn change(&mut self, changes: &mut Vec<Change<K>>) {
        // Stable: a namespace's changes keep their order.
        changes.sort_by(|a, b| a.namespace().cmp(b.namespace()));
        for run in changes.chunk_by(|a, b| a.namespace() == b.namespace()) {
            self.edit(run[0].namespace(), |objects| {
                run.iter().for_each(|c| c.apply_to(objects))
            });
        }
        changes.clear();
    }

    /// Replaces namespace `ns`'s slice with a copy `edit` changed; an emptied one goes.
    fn edit(&mut self, ns: &str, edit: impl FnOnce(&mut Vec<Arc<K>>)) {
        let mut map = self.index.write();
        let mut objects: Vec<Arc<K>> = map.get(ns).map(|s| s.to_vec()).unwrap_or_default();
        edit(&mut objects);
        if objects.is_empty() {
            map.remove(ns);
        } else {
            map.insert(ns.to_string(), objects.into());
        }
    }

    /// One object of a (re)list in progress.
    fn listed(&mut self, o: K) {
        let ns = namespace_of(&o).to_string();
        let name = name_of(&o).to_string();
        let relist = self.relist.get_or_insert_with(HashMap::new);
        relist.entry(ns).or_default().insert(name, Arc::new(o));
    }

    /// A (re)list completed: what it listed replaces the index.
    fn relisted(&mut self) {
        let listed = self.relist.take().unwrap_or_default();
        let fresh: ByNamespace<K> = listed
            .into_iter()
            .map(|(ns, objects)| (ns, objects.into_values().collect()))
            .collect();
        self.replace(fresh);
    }

    /// Replaces the whole index with `objects`, allocations shared with their owner (the
    /// binding store's reflector): a completed (re)list.
    pub fn replace_shared(&mut self, objects: Vec<Arc<K>>) {
        let mut listed: HashMap<String, BTreeMap<String, Arc<K>>> = HashMap::new();
        for o in objects {
            let (ns, name) = (namespace_of(o.as_ref()), name_of(o.as_ref()));
            let names = listed.entry(ns.to_string()).or_default();
            names.insert(name.to_string(), o.clone());
        }
        let fresh = listed
            .into_iter()
            .map(|(ns, objects)| (ns, objects.into_values().collect()))
            .collect();
        self.replace(fresh);
    }

    fn replace(&mut self, fresh: ByNamespace<K>) {
        *self.index.write() = fresh;
        self.index.shared.ready.send_replace(true);
    }

    /// Adds or replaces one object, its allocation shared with its owner.
    pub fn upsert_shared(&mut self, o: Arc<K>) {
        let ns = namespace_of(o.as_ref()).to_string();
        self.edit(&ns, |objects| upsert_into(objects, o));
    }

    pub fn remove(&mut self, o: &K) {
        self.edit(namespace_of(o), |objects| remove_from(objects, name_of(o)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use watcher::Event::{Apply, Delete, Init, InitApply, InitDone};

    /// An object `ns/name`, with `version` in its data to tell replacements apart.
    fn obj(ns: &str, name: &str, version: &str) -> ConfigMap {
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": ns, "name": name},
            "data": {"v": version}
        }))
        .unwrap()
    }

    /// What the index serves for `ns`: `name=version`, in order.
    fn view(index: &NamespaceIndex<ConfigMap>, ns: &str) -> Vec<String> {
        index
            .namespace(ns)
            .iter()
            .map(|o| format!("{}={}", name_of(o.as_ref()), o.data.as_ref().unwrap()["v"]))
            .collect()
    }

    #[test]
    fn applies_watch_events_per_namespace_and_relists_atomically() {
        let list = |items: &[(&str, &str, &str)]| -> Vec<watcher::Event<ConfigMap>> {
            let mut events = vec![Init];
            events.extend(items.iter().map(|(ns, n, v)| InitApply(obj(ns, n, v))));
            events.push(InitDone);
            events
        };
        // What happens, the events, then: ready, namespace a, namespace b, total.
        type Expected = (
            bool,
            &'static [&'static str],
            &'static [&'static str],
            usize,
        );
        let cases: Vec<(&str, Vec<watcher::Event<ConfigMap>>, Expected)> = vec![
            ("nothing yet", vec![], (false, &[], &[], 0)),
            (
                "a list in progress is not served",
                vec![Init, InitApply(obj("a", "x", "1"))],
                (false, &[], &[], 0),
            ),
            (
                "a completed list, sorted by name, per namespace",
                list(&[("a", "y", "1"), ("b", "z", "1"), ("a", "x", "1")]),
                (true, &["x=1", "y=1"], &["z=1"], 3),
            ),
            (
                "an empty list is a complete list",
                list(&[]),
                (true, &[], &[], 0),
            ),
            (
                "apply adds in name order, and replaces the same name",
                vec![
                    Apply(obj("a", "y", "1")),
                    Apply(obj("a", "x", "1")),
                    Apply(obj("b", "z", "1")),
                    Apply(obj("a", "y", "2")),
                ],
                (false, &["x=1", "y=2"], &["z=1"], 3),
            ),
            (
                "delete removes one object; an emptied namespace is gone",
                vec![
                    Apply(obj("a", "x", "1")),
                    Apply(obj("a", "y", "1")),
                    Apply(obj("b", "z", "1")),
                    Delete(obj("a", "x", "1")),
                    Delete(obj("b", "z", "1")),
                    Delete(obj("c", "never", "1")),
                ],
                (false, &["y=1"], &[], 1),
            ),
            (
                "a relist replaces everything: gone objects go, changed ones change",
                [
                    list(&[("a", "x", "1"), ("a", "y", "1"), ("b", "z", "1")]),
                    list(&[("a", "y", "2"), ("b", "w", "1")]),
                ]
                .concat(),
                (true, &["y=2"], &["w=1"], 2),
            ),
            (
                "the old view is served while a relist is in progress",
                [
                    list(&[("a", "x", "1")]),
                    vec![
                        Init,
                        InitApply(obj("a", "x", "2")),
                        InitApply(obj("b", "z", "1")),
                    ],
                ]
                .concat(),
                (true, &["x=1"], &[], 1),
            ),
        ];
        for (what, events, expected) in cases {
            served_after(what, events, expected);
        }
    }

    /// Applies `events` to a new index; asserts it is (ready, namespace a, namespace b, total).
    fn served_after(
        what: &str,
        events: Vec<watcher::Event<ConfigMap>>,
        (ready, a, b, total): (bool, &[&str], &[&str], usize),
    ) {
        let (index, mut writer) = NamespaceIndex::<ConfigMap>::new();
        for e in events {
            writer.apply(e);
        }
        assert_eq!(index.is_ready(), ready, "{what}: ready");
        assert_eq!(view(&index, "a"), a, "{what}: namespace a");
        assert_eq!(view(&index, "b"), b, "{what}: namespace b");
        assert_eq!(index.len(), total, "{what}: total");
    }

    #[test]
    fn readers_keep_the_slice_they_took() {
        let (index, mut writer) = NamespaceIndex::new();
        writer.apply(Apply(obj("a", "x", "1")));
        let taken = index.namespace("a");
        writer.apply(Apply(obj("a", "x", "2")));
        assert_eq!(taken[0].data.as_ref().unwrap()["v"], "1");
        assert_eq!(view(&index, "a"), ["x=2"]);
        assert_eq!(
            index.get("a", "x").unwrap().data.as_ref().unwrap()["v"],
            "2"
        );
        assert!(index.get("a", "missing").is_none() && index.get("b", "x").is_none());
    }

    /// An event of a few namespaces and names, the version telling replacements apart.
    fn event() -> impl proptest::strategy::Strategy<Value = watcher::Event<ConfigMap>> {
        use proptest::prelude::*;
        let o = (0..3u8, 0..6u8, 0..4u8)
            .prop_map(|(ns, name, v)| obj(&format!("ns{ns}"), &format!("o{name}"), &v.to_string()));
        prop_oneof![
            4 => o.clone().prop_map(Apply),
            3 => o.clone().prop_map(Delete),
            1 => Just(Init),
            1 => o.prop_map(InitApply),
            1 => Just(InitDone),
        ]
    }

    /// Every namespace as the index serves it.
    fn served(index: &NamespaceIndex<ConfigMap>) -> Vec<Vec<String>> {
        ["ns0", "ns1", "ns2"].map(|ns| view(index, ns)).to_vec()
    }

    proptest::proptest! {
        /// Events in batches of any size leave the index as one at a time does.
        #[test]
        fn batches_apply_as_single_events_do(
            events in proptest::collection::vec(event(), 0..60),
            cuts in proptest::collection::vec(1..8usize, 1..20),
        ) {
            let (one_by_one, mut writer) = NamespaceIndex::<ConfigMap>::new();
            for e in events.clone() {
                writer.apply(e);
            }
            let (batched, mut writer) = NamespaceIndex::<ConfigMap>::new();
            let mut rest = events.into_iter().peekable();
            for n in cuts.iter().cycle() {
                if rest.peek().is_none() {
                    break;
                }
                writer.apply_all(rest.by_ref().take(*n).collect::<Vec<_>>());
            }
            proptest::prop_assert_eq!(served(&batched), served(&one_by_one));
            proptest::prop_assert_eq!(batched.is_ready(), one_by_one.is_ready());
            proptest::prop_assert_eq!(batched.len(), one_by_one.len());
        }
    }

    #[tokio::test]
    async fn ready_after_the_first_complete_list() {
        let (index, mut writer) = NamespaceIndex::<ConfigMap>::new();
        let waiting = tokio::spawn(index.wait_until_ready());
        writer.apply(Init);
        writer.apply(InitApply(obj("a", "x", "1")));
        assert!(!index.is_ready());
        writer.apply(InitDone);
        tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .expect("ready resolves once the list is done")
            .unwrap();
    }
}
