//! The webhook's memo of recent offers. Building an offer (its env entries, their JSON, the
//! injection hash) was most of a small pod's plan, and it is the same for every pod of a
//! Deployment or Job; the merge into the pod's own containers stays per pod.
//!
//! An offer is keyed by everything it is built from: the binding's and the ServiceAccount's
//! uid and resourceVersion (the API server gives any change a new resourceVersion), the
//! [`Context`] and the [`PodInputs`]. Objects without both (built by hand, not read from the
//! API server) are never memoized. Each worker thread keeps its own few slots: no lock, no
//! shared cache line, and a bound on memory whatever the pods are.

use std::cell::RefCell;
use std::hash::BuildHasher;
use std::sync::Arc;

use kube::api::ObjectMeta;
use thread_local::ThreadLocal;

use super::Offer;
use crate::binding::MlflowWorkspaceBinding;
use crate::inject::values::{Context, PodInputs};

/// Slots per worker thread: a namespace's few bindings times the workloads creating pods at once.
const SLOTS: usize = 64;

/// An offer, or the identity refusal building it gave.
pub(crate) type Offered = Arc<Result<Offer, String>>;

/// Recent offers, per worker thread. Answers are the same with it as without it.
#[derive(Default)]
pub struct Offers {
    threads: ThreadLocal<RefCell<Slots>>,
    hasher: foldhash::fast::RandomState,
}

struct Slots {
    /// The key being looked up, written here to spare an allocation per lookup.
    key: Vec<u8>,
    entries: Vec<Option<(Box<[u8]>, Offered)>>,
}

impl Default for Slots {
    fn default() -> Self {
        Self {
            key: Vec::with_capacity(256),
            entries: vec![None; SLOTS],
        }
    }
}

impl std::fmt::Debug for Offers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offers").finish_non_exhaustive()
    }
}

impl Offers {
    pub fn new() -> Self {
        Self::default()
    }

    /// What `b` offers a pod of these inputs: the memoized offer when one of the same key was
    /// built on this thread and not displaced since, else a new one (kept when it has a key).
    pub(crate) fn get(
        &self,
        b: &MlflowWorkspaceBinding,
        pod: &PodInputs<'_>,
        ctx: &Context<'_>,
    ) -> Offered {
        let build = || Arc::new(Offer::of(b, pod, ctx));
        let mut slots = self.threads.get_or_default().borrow_mut();
        let Slots { key, entries } = &mut *slots;
        key.clear();
        if write_key(key, b, pod, ctx).is_none() {
            return build();
        }
        let slot = &mut entries[self.hasher.hash_one(&key[..]) as usize % SLOTS];
        if let Some((k, offered)) = slot
            && **k == key[..]
        {
            return offered.clone();
        }
        let offered = build();
        *slot = Some((key.as_slice().into(), offered.clone()));
        offered
    }
}

/// Writes the key of an offer: each field length-prefixed, so no two keys share bytes. None
/// when the binding or ServiceAccount lacks a uid or resourceVersion.
fn write_key(
    key: &mut Vec<u8>,
    b: &MlflowWorkspaceBinding,
    pod: &PodInputs<'_>,
    ctx: &Context<'_>,
) -> Option<()> {
    version(key, &b.metadata)?;
    // Destructured, as PodInputs below, so a field added to either cannot be left out of the key.
    let Context {
        namespace,
        service_account,
        default_tenant_id,
    } = *ctx;
    key.push(u8::from(service_account.is_some()));
    if let Some(sa) = service_account {
        version(key, &sa.metadata)?;
    }
    field(key, namespace);
    optional_field(key, default_tenant_id);
    let PodInputs {
        experiment,
        azwi_opt_out,
        service_account,
        template_hash,
        owner,
    } = *pod;
    optional_field(key, experiment);
    key.push(u8::from(azwi_opt_out));
    field(key, service_account);
    optional_field(key, template_hash);
    optional_field(key, owner.map(|o| o.kind));
    optional_field(key, owner.map(|o| o.name));
    Some(())
}

/// An object's uid and resourceVersion, both non-empty.
fn version(key: &mut Vec<u8>, meta: &ObjectMeta) -> Option<()> {
    let (uid, rv) = (non_empty(&meta.uid)?, non_empty(&meta.resource_version)?);
    field(key, uid);
    field(key, rv);
    Some(())
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

fn optional_field(key: &mut Vec<u8>, text: Option<&str>) {
    key.push(u8::from(text.is_some()));
    if let Some(text) = text {
        field(key, text);
    }
}

fn field(key: &mut Vec<u8>, text: &str) {
    key.extend_from_slice(&(text.len() as u32).to_le_bytes());
    key.extend_from_slice(text.as_bytes());
}

#[cfg(test)]
mod tests;
