//! `bindings{ready}` kept by counting changes: a reconcile or a watch event moves one binding
//! between the counts, instead of every reconcile walking every binding (1,000 bindings made
//! their first sync a million steps).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use kube::runtime::reflector::ObjectRef;

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

    /// The binding store applied `b` (created, or its status or spec changed).
    pub fn applied(&self, b: &MlflowWorkspaceBinding) {
        self.update(|s| s.set(ObjectRef::from(b), ready_of(b.status.as_ref())));
    }

    /// The binding is gone.
    pub fn remove(&self, r: &Ref) {
        self.update(|s| s.remove(r));
    }

    /// `all` is every binding there is (a (re)list, or a reader that fell behind): the others,
    /// deleted while nobody looked, are dropped.
    pub fn listed(&self, all: &[Arc<MlflowWorkspaceBinding>]) {
        self.update(|s| {
            let mut seen = HashSet::with_capacity(all.len());
            for b in all {
                let r = ObjectRef::from(b.as_ref());
                seen.insert(r.clone());
                s.set(r, ready_of(b.status.as_ref()));
            }
            s.relisted(seen);
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

    /// What happens in a step of [`counts_follow_reconciles_and_the_store`].
    enum Step {
        Listed(Vec<MlflowWorkspaceBinding>),
        Applied(Box<MlflowWorkspaceBinding>),
        Deleted(&'static str),
        /// `b` reconciled to Ready False.
        Reconciled,
    }

    #[test]
    fn counts_follow_reconciles_and_the_store() {
        use Step::*;
        let (a, b, c) = (
            binding("a", Some("True")),
            binding("b", None),
            binding("c", Some("False")),
        );
        let b_false = binding("b", Some("False"));
        // (what happens; then [True, False, Unknown])
        let steps = [
            (
                "a and b listed",
                Listed(vec![a.clone(), b.clone()]),
                [1, 0, 1],
            ),
            ("b reconciled", Reconciled, [1, 1, 0]),
            ("b again, same", Reconciled, [1, 1, 0]),
            ("c created", Applied(Box::new(c.clone())), [1, 2, 0]),
            ("a deleted", Deleted("a"), [0, 2, 0]),
            ("a deleted twice", Deleted("a"), [0, 2, 0]),
            ("b gone in a gap", Listed(vec![c]), [0, 1, 0]),
            ("a back, Ready", Applied(Box::new(a)), [1, 1, 0]),
        ];
        let g = ReadyGauge::new(Metrics::new());
        for (what, step, want) in steps {
            match step {
                Listed(all) => g.listed(&all.into_iter().map(Arc::new).collect::<Vec<_>>()),
                Applied(x) => g.applied(&x),
                Deleted(name) => g.remove(&ObjectRef::new(name).within("team-a")),
                Reconciled => g.set(&b, b_false.status.as_ref().unwrap()),
            }
            assert_eq!(counts(&g), want, "{what}");
        }
    }
}
