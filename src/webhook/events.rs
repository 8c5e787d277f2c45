//! Warning Events on a binding for refused pods, at most one per binding and reason a minute: a
//! Deployment scaled to 100 refused pods makes one Event, not 100 API calls.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use crate::recorder::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use tokio::time::Instant;

use crate::binding::MlflowWorkspaceBinding;
use crate::inject::Refusal;

const EVERY: Duration = Duration::from_secs(60);

/// Lets one call per key through per window.
pub(crate) struct Throttle<K> {
    last: Mutex<HashMap<K, Instant>>,
    every: Duration,
}

impl<K: Eq + Hash> Throttle<K> {
    pub(crate) fn new(every: Duration) -> Self {
        Self {
            last: Mutex::new(HashMap::new()),
            every,
        }
    }

    /// True for the first call with `key` in a window of `every`.
    pub(crate) fn allow(&self, key: K) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if last
            .get(&key)
            .is_some_and(|t| now.duration_since(*t) < self.every)
        {
            return false;
        }
        // Keys whose window has passed would let the next call through anyway: forget them.
        last.retain(|_, t| now.duration_since(*t) < self.every);
        last.insert(key, now);
        true
    }
}

pub struct RefusalEvents {
    recorder: Recorder,
    throttle: Throttle<(String, String, &'static str)>,
}

impl RefusalEvents {
    /// Events reported by `mlflow-operator-webhook`, replica `instance`.
    pub fn new(client: Client, instance: String) -> Self {
        let reporter = Reporter {
            controller: "mlflow-operator-webhook".into(),
            instance: Some(instance),
        };
        Self {
            recorder: Recorder::new(client, reporter),
            throttle: Throttle::new(EVERY),
        }
    }

    /// Records a Warning Event on the binding the refusal is about, if any, off the admission
    /// path: the answer does not wait for it.
    pub fn refused(&self, namespace: &str, refusal: &Refusal) {
        let Some(binding) = &refusal.binding else {
            return;
        };
        let key = (
            namespace.to_string(),
            binding.clone(),
            refusal.reason.as_str(),
        );
        if !self.throttle.allow(key) {
            return;
        }
        let recorder = self.recorder.clone();
        let mut reference = MlflowWorkspaceBinding::object_ref(&Default::default(), &());
        reference.name = Some(binding.clone());
        reference.namespace = Some(namespace.to_string());
        let event = Event {
            type_: EventType::Warning,
            reason: "PodRefused".into(),
            note: Some(refusal.message.chars().take(1000).collect()),
            action: "Admit".into(),
            secondary: None,
        };
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::debug!(error = %e, "could not record a refusal Event");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_call_per_key_per_window() {
        let t = Throttle::new(EVERY);
        let step = |d| tokio::time::advance(d);
        assert!(t.allow("a"), "the first call");
        assert!(!t.allow("a"), "the same key at once");
        assert!(t.allow("b"), "another key");
        step(EVERY - Duration::from_millis(1)).await;
        assert!(!t.allow("a"), "still within the window");
        step(Duration::from_millis(1)).await;
        assert!(t.allow("a"), "the window has passed");
        assert!(!t.allow("a"));
        assert!(t.allow("b"), "b's window has passed too");
    }
}
