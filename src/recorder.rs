//! Kubernetes Events (`events.k8s.io/v1`), a repeat within six minutes counted in the first one's
//! series, as kube's `Recorder` does. Written here because kube's keeps every Event it published
//! whole for those six minutes: with 1,000 bindings becoming Ready its cache was 4.3 MiB, about
//! 40% of the leader's heap. This one remembers of each Event only what a repeat needs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};

pub use kube::runtime::events::{Event, EventType, Reporter};

/// How long a repeat joins the first Event's series (kube's and client-go's window).
const SERIES_WINDOW: SignedDuration = SignedDuration::from_secs(6 * 60);

/// What makes two Events the same one repeated: everything but the note and the time.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    warning: bool,
    action: String,
    reason: String,
    /// kind/namespace/name/uid of the object the Event is about (none of them holds a '/').
    regarding: String,
}

impl Key {
    fn of(ev: &Event, regarding: &ObjectReference) -> Self {
        let part = |s: &Option<String>| s.clone().unwrap_or_default();
        let regarding = [
            part(&regarding.kind),
            part(&regarding.namespace),
            part(&regarding.name),
            part(&regarding.uid),
        ]
        .join("/");
        Self {
            warning: ev.type_ == EventType::Warning,
            action: ev.action.clone(),
            reason: ev.reason.clone(),
            regarding,
        }
    }
}

/// The Event a repeat patches, and its series so far.
#[derive(Clone, Debug, PartialEq)]
struct Posted {
    name: String,
    count: i32,
    last: Timestamp,
}

/// How often Events past their window are forgotten: a sweep on every publish made 1,000
/// bindings becoming Ready a million steps.
const SWEEP_EVERY: SignedDuration = SignedDuration::from_secs(60);

/// Events posted in the last [`SERIES_WINDOW`] (and the last [`SWEEP_EVERY`] before it).
#[derive(Default)]
struct Recent {
    posted: HashMap<Key, Posted>,
    swept: Option<Timestamp>,
}

impl Recent {
    /// The Event `key` repeats at `now` and the series count it gets, if one was posted within
    /// the window.
    fn repeat(&mut self, key: &Key, now: Timestamp) -> Option<(String, i32)> {
        let within = |p: &Posted| now.duration_since(p.last) < SERIES_WINDOW;
        if self
            .swept
            .is_none_or(|t| now.duration_since(t) >= SWEEP_EVERY)
        {
            self.posted.retain(|_, p| within(p));
            self.swept = Some(now);
        }
        let p = self.posted.get(key).filter(|p| within(p))?;
        Some((p.name.clone(), p.count + 1))
    }

    fn posted(&mut self, key: Key, name: String, count: i32, now: Timestamp) {
        let last = now;
        self.posted.insert(key, Posted { name, count, last });
    }
}

/// Cheap to clone; clones share what was posted.
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    reporter: Arc<Reporter>,
    recent: Arc<Mutex<Recent>>,
}

impl Recorder {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self {
            client,
            reporter: Arc::new(reporter),
            recent: Arc::default(),
        }
    }

    /// Posts `ev` about `regarding` (in its namespace, "default" for a cluster-scoped object), or
    /// counts it in the series of the same Event posted within six minutes.
    pub async fn publish(&self, ev: &Event, regarding: &ObjectReference) -> kube::Result<()> {
        let now = Timestamp::now();
        let key = Key::of(ev, regarding);
        let ns = regarding.namespace.as_deref().unwrap_or("default");
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), ns);
        let repeat = self.recent().repeat(&key, now);
        if let Some((name, count)) = repeat {
            let series =
                serde_json::json!({"series": {"count": count, "lastObservedTime": MicroTime(now)}});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&series))
                .await
            {
                Ok(_) => {
                    self.recent().posted(key, name, count, now);
                    return Ok(());
                }
                // Deleted meanwhile (Events expire after an hour by default): post it anew.
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let event = self.event(ev, regarding, now);
        let name = event.metadata.name.clone().unwrap_or_default();
        api.create(&PostParams::default(), &event).await?;
        self.recent().posted(key, name, 1, now);
        Ok(())
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The Event as kube's `Recorder` writes it: named after the object and the time.
    fn event(&self, ev: &Event, regarding: &ObjectReference, now: Timestamp) -> K8sEvent {
        let controller = &self.reporter.controller;
        let object = regarding.name.as_ref().unwrap_or(controller);
        let type_ = match ev.type_ {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        };
        K8sEvent {
            metadata: ObjectMeta {
                name: Some(format!("{object}.{:x}", now.as_nanosecond())),
                namespace: regarding.namespace.clone(),
                ..Default::default()
            },
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            note: ev.note.clone(),
            type_: Some(type_.into()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            related: ev.secondary.clone(),
            reporting_controller: Some(controller.clone()),
            reporting_instance: Some(self.reporter.instance.clone().unwrap_or(controller.clone())),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests;
