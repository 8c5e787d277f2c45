//! The parts of an AdmissionReview the webhook reads, in one pass over the body: everything
//! else (userInfo, oldObject, options) is skipped without being built, and the pod is read as
//! its namespace's bindings need it as soon as the namespace is known (the API server encodes
//! `namespace` before `object`). Hand-written because serde's derive cannot give a field's
//! value a seed made from an earlier field; reading the object a second time cost as much as
//! validating the whole body.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::Object;
use crate::binding::MlflowWorkspaceBinding;
use crate::inject::{EnvNames, pod_seed};
use crate::webhook::Slice;

/// The bindings of a namespace, from the webhook's index.
pub type Lookup<'l> = &'l dyn Fn(&str) -> Slice<MlflowWorkspaceBinding>;

pub(super) struct RawReview<'b> {
    pub api_version: Cow<'b, str>,
    pub kind: Cow<'b, str>,
    pub request: Option<RawRequest<'b>>,
}

pub(super) struct RawRequest<'b> {
    pub uid: Cow<'b, str>,
    pub kind: Option<RawGvk<'b>>,
    pub namespace: Cow<'b, str>,
    pub operation: Cow<'b, str>,
    pub object: Object<'b>,
    pub dry_run: Option<bool>,
}

#[derive(Deserialize)]
pub(super) struct RawGvk<'b> {
    #[serde(default, borrow)]
    pub group: Cow<'b, str>,
    #[serde(default, borrow)]
    pub version: Cow<'b, str>,
    #[serde(default, borrow)]
    pub kind: Cow<'b, str>,
}

/// A string borrowed from the body unless it has escapes: under load every allocation of an
/// admission is a likely cache miss (BENCHMARKS.md, seventh stop).
#[derive(Deserialize)]
struct Text<'b>(#[serde(borrow)] Cow<'b, str>);

/// Reads `body` as an AdmissionReview; with `lookup`, the object is read as the bindings of the
/// request's namespace need it, when the namespace comes first.
pub(super) fn read<'b>(
    body: &'b [u8],
    lookup: Option<Lookup<'_>>,
) -> serde_json::Result<RawReview<'b>> {
    // A body of UTF-8 (every body the API server sends) is read as text: its strings and raw
    // values then need no check of their own, which cost more than checking it whole once.
    // Any other is not JSON (RFC 8259, 8.1), even where its bytes are in a string no reader
    // decodes (the fast path refuses it, and so did the pod's second pass): serde_json's own
    // error, which says where, when its reading of the bytes finds one.
    match std::str::from_utf8(body) {
        Ok(text) => read_with(serde_json::Deserializer::from_str(text), lookup),
        Err(e) => {
            read_with(serde_json::Deserializer::from_slice(body), lookup)?;
            Err(de::Error::custom(format_args!(
                "the body is not UTF-8: {e}"
            )))
        }
    }
}

fn read_with<'b, R: serde_json::de::Read<'b>>(
    mut d: serde_json::Deserializer<R>,
    lookup: Option<Lookup<'_>>,
) -> serde_json::Result<RawReview<'b>> {
    let review = Review(lookup).deserialize(&mut d)?;
    d.end()?;
    Ok(review)
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum ReviewField {
    ApiVersion,
    Kind,
    Request,
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum RequestField {
    Uid,
    Kind,
    Namespace,
    Operation,
    Object,
    DryRun,
    #[serde(other)]
    Other,
}

/// Sets a field read once; a repeated one is an error, as serde's derive makes it.
fn once<T, E: de::Error>(slot: &mut Option<T>, name: &'static str, value: T) -> Result<(), E> {
    match slot.replace(value) {
        Some(_) => Err(E::duplicate_field(name)),
        None => Ok(()),
    }
}

#[derive(Clone, Copy)]
struct Review<'l>(Option<Lookup<'l>>);

impl<'de> DeserializeSeed<'de> for Review<'_> {
    type Value = RawReview<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RawReview<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Review<'_> {
    type Value = RawReview<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an AdmissionReview object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawReview<'de>, A::Error> {
        let (mut api_version, mut kind, mut request) = (None, None, None);
        while let Some(field) = map.next_key()? {
            match field {
                ReviewField::ApiVersion => {
                    once(&mut api_version, "apiVersion", map.next_value::<Text>()?.0)?
                }
                ReviewField::Kind => once(&mut kind, "kind", map.next_value::<Text>()?.0)?,
                ReviewField::Request => once(
                    &mut request,
                    "request",
                    map.next_value_seed(Request(self.0))?,
                )?,
                ReviewField::Other => drop(map.next_value::<IgnoredAny>()?),
            }
        }
        Ok(RawReview {
            api_version: api_version.unwrap_or_default(),
            kind: kind.unwrap_or_default(),
            request: request.flatten(),
        })
    }
}

/// `request`, or null.
#[derive(Clone, Copy)]
struct Request<'l>(Option<Lookup<'l>>);

impl<'de> DeserializeSeed<'de> for Request<'_> {
    type Value = Option<RawRequest<'de>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for Request<'_> {
    type Value = Option<RawRequest<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an AdmissionRequest object")
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut uid, mut kind, mut namespace, mut operation) = (None, None, None, None);
        let (mut object, mut dry_run) = (None, None);
        while let Some(field) = map.next_key()? {
            match field {
                RequestField::Uid => once(&mut uid, "uid", map.next_value::<Text>()?.0)?,
                RequestField::Kind => once(&mut kind, "kind", map.next_value()?)?,
                RequestField::Namespace => {
                    once(&mut namespace, "namespace", map.next_value::<Text>()?.0)?
                }
                RequestField::Operation => {
                    once(&mut operation, "operation", map.next_value::<Text>()?.0)?
                }
                RequestField::DryRun => once(&mut dry_run, "dryRun", map.next_value()?)?,
                RequestField::Object => {
                    let read = object_of(&mut map, self.0, namespace.as_deref())?;
                    once(&mut object, "object", read)?
                }
                RequestField::Other => drop(map.next_value::<IgnoredAny>()?),
            }
        }
        Ok(Some(RawRequest {
            uid: uid.unwrap_or_default(),
            kind: kind.flatten(),
            namespace: namespace.unwrap_or_default(),
            operation: operation.unwrap_or_default(),
            object: object.unwrap_or(Object::Absent),
            dry_run: dry_run.flatten(),
        }))
    }
}

/// The object, read now when its namespace's bindings are known, else kept as its text.
fn object_of<'de, A: MapAccess<'de>>(
    map: &mut A,
    lookup: Option<Lookup<'_>>,
    namespace: Option<&str>,
) -> Result<Object<'de>, A::Error> {
    let (Some(lookup), Some(namespace)) = (lookup, namespace.filter(|n| !n.is_empty())) else {
        let text: Option<&'de RawValue> = map.next_value()?;
        return Ok(text.map_or(Object::Absent, Object::Text));
    };
    let bindings = lookup(namespace);
    let env = EnvNames::of(bindings.iter().map(Arc::as_ref));
    let pod = map.next_value_seed(pod_seed(&env))?;
    drop(env);
    Ok(Object::Read { bindings, pod })
}
