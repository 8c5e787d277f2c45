//! The least a reader of what the planner reads can cost with serde_json: the same fields as
//! the webhook's reader (`src/webhook/review/raw.rs` and `src/inject/pod/sparse.rs`), read by
//! serde's derive into structs that borrow from the body (no `Value`, no map of the pod's own
//! keys built), everything else skipped. It plans nothing and validates only types: a bound on
//! the reading part of a borrowed view, measured before writing one.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::IgnoredAny;

type Text<'a> = Cow<'a, str>;

#[derive(Deserialize)]
pub struct Review<'a> {
    #[serde(borrow, rename = "apiVersion")]
    pub api_version: Text<'a>,
    #[serde(borrow)]
    pub kind: Text<'a>,
    #[serde(borrow)]
    pub request: Option<Request<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request<'a> {
    #[serde(borrow)]
    pub uid: Text<'a>,
    #[serde(borrow)]
    pub kind: Option<Gvk<'a>>,
    #[serde(borrow, default)]
    pub namespace: Text<'a>,
    #[serde(borrow)]
    pub operation: Text<'a>,
    #[serde(borrow)]
    pub object: Option<Pod<'a>>,
    pub dry_run: Option<bool>,
}

#[derive(Deserialize)]
pub struct Gvk<'a> {
    #[serde(borrow, default)]
    pub group: Text<'a>,
    #[serde(borrow, default)]
    pub version: Text<'a>,
    #[serde(borrow, default)]
    pub kind: Text<'a>,
}

#[derive(Deserialize)]
pub struct Pod<'a> {
    #[serde(borrow)]
    pub metadata: Option<Metadata<'a>>,
    #[serde(borrow)]
    pub spec: Option<Spec<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata<'a> {
    #[serde(borrow)]
    pub namespace: Option<Text<'a>>,
    #[serde(borrow)]
    pub labels: Option<BTreeMap<Text<'a>, Text<'a>>>,
    #[serde(borrow)]
    pub annotations: Option<BTreeMap<Text<'a>, Text<'a>>>,
    #[serde(borrow)]
    pub owner_references: Option<Vec<Owner<'a>>>,
}

#[derive(Deserialize)]
pub struct Owner<'a> {
    #[serde(borrow)]
    pub kind: Option<Text<'a>>,
    #[serde(borrow)]
    pub name: Option<Text<'a>>,
    pub controller: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec<'a> {
    #[serde(borrow)]
    pub service_account_name: Option<Text<'a>>,
    #[serde(borrow)]
    pub service_account: Option<Text<'a>>,
    #[serde(borrow)]
    pub volumes: Option<Vec<Named<'a>>>,
    #[serde(borrow)]
    pub containers: Option<Vec<Container<'a>>>,
    #[serde(borrow)]
    pub init_containers: Option<Vec<Container<'a>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container<'a> {
    #[serde(borrow)]
    pub name: Text<'a>,
    #[serde(borrow)]
    pub image: Option<Text<'a>>,
    #[serde(borrow)]
    pub env: Option<Vec<Named<'a>>>,
    pub env_from: Option<Vec<IgnoredAny>>,
    #[serde(borrow)]
    pub volume_mounts: Option<Vec<Mount<'a>>>,
}

/// An env entry or a volume: looked up by name, the rest skipped.
#[derive(Deserialize)]
pub struct Named<'a> {
    #[serde(borrow)]
    pub name: Option<Text<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mount<'a> {
    #[serde(borrow)]
    pub name: Option<Text<'a>>,
    #[serde(borrow)]
    pub mount_path: Option<Text<'a>>,
}

/// Read as the webhook reads a UTF-8 body: as text.
pub fn read(body: &[u8]) -> Review<'_> {
    let text = std::str::from_utf8(body).expect("a UTF-8 review");
    serde_json::from_str(text).expect("a valid review")
}
