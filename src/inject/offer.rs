//! What a binding offers a pod, ready to merge into its containers: the entries of
//! [`values::desired`], each encoded as JSON, and the injected annotations' values. It is the
//! same for every pod of the same [`PodInputs`], so the webhook keeps recent ones ([`Offers`]).

use serde_json::value::RawValue;

use super::patch::encode;
use super::values::{self, Context, Desired, PodInputs};
use crate::binding::MlflowWorkspaceBinding;

mod memo;

pub use memo::Offers;

#[derive(Debug)]
pub(crate) struct Offer {
    pub desired: Desired,
    /// The JSON of each of `desired.env` and `desired.mounts`.
    pub env_json: Vec<Box<RawValue>>,
    pub mounts_json: Vec<Box<RawValue>>,
    /// The injected annotation's value: `<binding>/<generation>` and the identity's suffix.
    pub marker: String,
    /// The injected-hash annotation's value.
    pub hash: String,
}

impl Offer {
    /// What `b` offers a pod of these inputs; the error is an identity refusal message.
    pub(crate) fn of(
        b: &MlflowWorkspaceBinding,
        pod: &PodInputs<'_>,
        ctx: &Context<'_>,
    ) -> Result<Self, String> {
        let desired = values::desired(b, pod, ctx)?;
        let name = b.metadata.name.as_deref().unwrap_or_default();
        let generation = b.metadata.generation.unwrap_or(0);
        Ok(Self {
            env_json: encode(&desired.env),
            mounts_json: encode(&desired.mounts),
            marker: format!("{name}/{generation}{}", desired.annotation_suffix),
            hash: b.injection_hash(),
            desired,
        })
    }
}
