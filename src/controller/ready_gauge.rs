//! `bindings{ready}` kept by counting changes: a reconcile or a watch event moves one binding
//! between the counts, instead of every reconcile walking every binding (1,000 bindings made
//! their first sync a million steps).

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};

use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::Event;

use crate::binding::{FALSE, MlflowWorkspaceBinding, MlflowWorkspaceBindingStatus, TRUE, UNKNOWN};
use crate::metrics::{Metrics, ReadyLabels};

type Ref = ObjectRef<MlflowWorkspaceBinding>;

/// The `ready` label values, in the order of [`State::counts`].
const READY: [&str; 3] = [TRUE, FALSE, UNKNOWN];

/// The Ready state a status counts as.
fn ready_of(s: Option<&MlflowWorkspaceBindingStatus>) -> usize {
    let status = s.and_then(MlflowWorkspaceBindingStatus::ready);
    let value = status.map_or(UNKNOWN, |c| c.status.as_str());
    READY.iter().position(|r| *r == value).unwrap_or(2)
}

#[derive(Default)]
struct State {
    of: HashMap<Ref, usize>,
    counts: [i64; 3],
    /// The bindings a relist has shown so far; at its end, the others are gone.
    relisting: Option<HashSet<Ref>>,
}

impl State {
    fn set(&mut self, r: Ref, ready: usize) {
        if let Some(old) = self.of.insert(r, ready) {
            self.counts[old] -= 1;
        }
        self.counts[ready] += 1;
    }

    fn remove(&mut self, r: &Ref) {
        if let Some(old) = self.of.remove(r) {
            self.counts[old] -= 1;
        }
    }

    fn relisted(&mut self, seen: HashSet<Ref>) {
        self.of.retain(|r, _| seen.contains(r));
        self.counts = [0; 3];
        for ready in self.of.values() {
            self.counts[*ready] += 1;
        }
    }
}

/// The gauge of one term of leadership.
pub(super) struct ReadyGauge {
    metrics: Metrics,
    state: Mutex<State>,
}

impl ReadyGauge {
    pub fn new(metrics: Metrics) -> Self {
        Self {
            metrics,
            state: Mutex::default(),
        }
    }

    /// A reconcile's result for `b`: what its status is about to say.
    pub fn set(&self, b: &MlflowWorkspaceBinding, status: &MlflowWorkspaceBindingStatus) {
        self.update(|s| s.set(ObjectRef::from(b), ready_of(Some(status))));
    }

    /// What the binding watch saw: a binding's status, a deletion, or a relist that drops the
    /// bindings deleted while the watch was down.
    pub fn observe(&self, event: &Event<MlflowWorkspaceBinding>) {
        self.update(|s| match event {
            Event::Apply(b) => s.set(ObjectRef::from(b), ready_of(b.status.as_ref())),
            Event::Delete(b) => s.remove(&ObjectRef::from(b)),
            Event::Init => s.relisting = Some(HashSet::new()),
            Event::InitApply(b) => {
                let r = ObjectRef::from(b);
                s.relisting.get_or_insert_default().insert(r.clone());
                s.set(r, ready_of(b.status.as_ref()));
            }
            Event::InitDone => {
                let seen = s.relisting.take().unwrap_or_default();
                s.relisted(seen);
            }
        });
    }

    fn update(&self, change: impl FnOnce(&mut State)) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        change(&mut state);
        set_counts(&self.metrics, state.counts);
    }
}

/// Sets `bindings{ready}` to `counts` ([True, False, Unknown]).
pub(super) fn set_counts(metrics: &Metrics, counts: [i64; 3]) {
    for (ready, n) in READY.iter().zip(counts) {
        let labels = ReadyLabels {
            ready: ready.to_string(),
        };
        metrics.bindings.get_or_create(&labels).set(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn binding(name: &str, ready: Option<&str>) -> MlflowWorkspaceBinding {
        let conditions: Vec<_> = ready
            .map(|s| {
                json!({"type": "Ready", "status": s, "reason": "R", "message": "",
                        "lastTransitionTime": "2026-01-01T00:00:00Z"})
            })
            .into_iter()
            .collect();
        serde_json::from_value(json!({
            "apiVersion": "mlflow-operator.io/v1alpha1", "kind": "MlflowWorkspaceBinding",
            "metadata": {"name": name, "namespace": "team-a"},
            "spec": {"trackingUri": "http://mlflow:5000"},
            "status": {"conditions": conditions},
        }))
        .unwrap()
    }

    fn counts(g: &ReadyGauge) -> [i64; 3] {
        READY.map(|ready| {
            let labels = ReadyLabels {
                ready: ready.to_string(),
            };
            g.metrics.bindings.get_or_create(&labels).get()
        })
    }

    #[test]
    fn counts_follow_reconciles_and_the_watch() {
        let (a, b, c) = (
            binding("a", Some("True")),
            binding("b", None),
            binding("c", Some("False")),
        );
        let b_false = binding("b", Some("False"));
        let watch = Some;
        // (what happens: a watch event, else b reconciled to Ready False; then [True, False,
        // Unknown])
        let steps = [
            ("relist starts", watch(Event::Init), [0, 0, 0]),
            ("a listed", watch(Event::InitApply(a.clone())), [1, 0, 0]),
            ("b listed", watch(Event::InitApply(b.clone())), [1, 0, 1]),
            ("relist done", watch(Event::InitDone), [1, 0, 1]),
            ("b reconciled", None, [1, 1, 0]),
            ("b again, same", None, [1, 1, 0]),
            ("c created", watch(Event::Apply(c.clone())), [1, 2, 0]),
            ("a deleted", watch(Event::Delete(a.clone())), [0, 2, 0]),
            ("a deleted twice", watch(Event::Delete(a)), [0, 2, 0]),
            ("relist starts", watch(Event::Init), [0, 2, 0]),
            ("only c listed", watch(Event::InitApply(c)), [0, 2, 0]),
            ("b gone in the gap", watch(Event::InitDone), [0, 1, 0]),
        ];
        let g = ReadyGauge::new(Metrics::new());
        for (what, event, want) in steps {
            match event {
                Some(event) => g.observe(&event),
                None => g.set(&b, b_false.status.as_ref().unwrap()),
            }
            assert_eq!(counts(&g), want, "{what}");
        }
    }
}
