//! Reading an AdmissionReview: only the fields the webhook uses, and of the pod what the
//! planner reads. A review as the API server sends it is read as sonic-rs's tree ([`tree`]);
//! any other by serde_json, in one pass when the namespace comes before the object, which
//! words every error.

mod raw;
mod tree;

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::Value;
use serde_json::value::RawValue;

use super::Slice;
use super::answer::Outcome;
use crate::binding::MlflowWorkspaceBinding;
use crate::inject::{EnvNames, parse_pod};

pub use raw::Lookup;
pub(crate) use tree::{read_tree, tree};

/// A parsed AdmissionReview request: only what the webhook needs.
#[derive(Debug, Clone)]
pub struct ReviewRequest<'b> {
    /// Borrowed from the body unless escaped, as are the operation and namespace.
    pub uid: Cow<'b, str>,
    pub operation: Cow<'b, str>,
    pub namespace: Cow<'b, str>,
    pub dry_run: bool,
    object: Object<'b>,
}

/// The request's object, as far as it has been read.
#[derive(Debug, Clone)]
enum Object<'b> {
    /// None, or null.
    Absent,
    /// The text it came as (validated JSON), to be read once the namespace's bindings are known.
    Text(&'b RawValue),
    /// Read with the review, as the bindings of its namespace need it.
    Read {
        bindings: Slice<MlflowWorkspaceBinding>,
        pod: Value,
    },
}

impl ReviewRequest<'_> {
    /// The pod as the planner reads it, with of each container's env the entries `env` keeps
    /// (null when the request has none). A pod read with the review ([`parse_review_for`]) is
    /// as its namespace's bindings needed it, whatever `env` says.
    pub fn pod(&self, env: &EnvNames<'_>) -> Result<Value, ReviewError> {
        match &self.object {
            Object::Text(raw) => read_pod(raw, env),
            Object::Absent => Ok(Value::Null),
            Object::Read { pod, .. } => Ok(pod.clone()),
        }
    }

    /// Takes the bindings of the request's namespace and the pod as read for them: what the
    /// webhook plans from. Reads the pod now unless the review already did.
    pub fn take(
        &mut self,
        lookup: Lookup<'_>,
    ) -> Result<(Slice<MlflowWorkspaceBinding>, Value), ReviewError> {
        match std::mem::replace(&mut self.object, Object::Absent) {
            Object::Read { bindings, pod } => Ok((bindings, pod)),
            Object::Text(raw) => {
                let bindings = lookup(&self.namespace);
                let pod = read_pod(raw, &EnvNames::of(bindings.iter().map(Arc::as_ref)))?;
                Ok((bindings, pod))
            }
            Object::Absent => Ok((lookup(&self.namespace), Value::Null)),
        }
    }
}

fn read_pod(raw: &RawValue, env: &EnvNames<'_>) -> Result<Value, ReviewError> {
    parse_pod(raw.get(), env).map_err(|e| ReviewError::NotJson(e.to_string()))
}

/// Why a request could not be reviewed; each says what is wrong with it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReviewError {
    #[error("request body is not JSON: {0}")]
    NotJson(String),
    #[error(
        "not an admission.k8s.io/v1 AdmissionReview (apiVersion {api_version:?}, kind {kind:?}); set admissionReviewVersions: [v1]"
    )]
    NotAdmissionReview { api_version: String, kind: String },
    #[error("AdmissionReview has no request.uid")]
    NoUid,
    #[error("AdmissionReview request is missing {0}")]
    Missing(&'static str),
    #[error(
        "this webhook mutates core/v1 pods only, got {0}; the MutatingWebhookConfiguration rules should match pods on CREATE"
    )]
    WrongKind(String),
}

impl ReviewError {
    /// What the admissions metric counts the request as.
    pub fn outcome(&self) -> Outcome {
        match self {
            ReviewError::NotJson(_) => Outcome::Malformed,
            ReviewError::NotAdmissionReview { .. } => Outcome::Malformed,
            ReviewError::NoUid => Outcome::Malformed,
            ReviewError::Missing(_) => Outcome::Malformed,
            ReviewError::WrongKind(_) => Outcome::WrongKind,
        }
    }
}

/// A request the webhook cannot review, with its uid when one could be read: then the answer
/// can still be an AdmissionReview, whose message the API server shows to the user.
#[derive(Debug, Clone, PartialEq)]
pub struct Unreadable {
    pub uid: Option<String>,
    pub error: ReviewError,
}

impl Unreadable {
    pub(crate) fn new(uid: Option<String>, error: ReviewError) -> Self {
        Self { uid, error }
    }
}

const API_VERSION: &str = "admission.k8s.io/v1";
const KIND: &str = "AdmissionReview";

/// Parses an AdmissionReview of a pod, keeping the pod as text.
pub fn parse_review(body: &[u8]) -> Result<ReviewRequest<'_>, Unreadable> {
    parse(body, None)
}

/// Parses an AdmissionReview of a pod, reading the pod in the same pass as the bindings of the
/// request's namespace (from `lookup`) need it, when the namespace comes first, as the API
/// server sends it.
pub fn parse_review_for<'b>(
    body: &'b [u8],
    lookup: Lookup<'_>,
) -> Result<ReviewRequest<'b>, Unreadable> {
    parse(body, Some(lookup))
}

fn parse<'b>(body: &'b [u8], lookup: Option<Lookup<'_>>) -> Result<ReviewRequest<'b>, Unreadable> {
    let raw = raw::read(body, lookup).map_err(|e| diagnose(body, e))?;
    let uid = raw
        .request
        .as_ref()
        .map(|r| r.uid.clone())
        .filter(|u| !u.is_empty());
    let owned = |uid: &Option<Cow<str>>| uid.as_deref().map(str::to_string);
    if raw.api_version != API_VERSION || raw.kind != KIND {
        let (api_version, kind) = (raw.api_version.into_owned(), raw.kind.into_owned());
        let error = ReviewError::NotAdmissionReview { api_version, kind };
        return Err(Unreadable::new(owned(&uid), error));
    }
    let req = raw
        .request
        .ok_or(Unreadable::new(None, ReviewError::Missing("request")))?;
    let uid = uid.ok_or(Unreadable::new(None, ReviewError::NoUid))?;
    let err = |e| Unreadable::new(Some(uid.to_string()), e);
    let k = req
        .kind
        .ok_or_else(|| err(ReviewError::Missing("request.kind")))?;
    if !(k.group.is_empty() && k.version == "v1" && k.kind == "Pod") {
        let gvk = if k.group.is_empty() {
            format!("{}/{}", k.version, k.kind)
        } else {
            format!("{}/{}/{}", k.group, k.version, k.kind)
        };
        return Err(err(ReviewError::WrongKind(gvk)));
    }
    if req.operation.is_empty() {
        return Err(err(ReviewError::Missing("request.operation")));
    }
    let mut request = ReviewRequest {
        uid,
        operation: req.operation,
        namespace: req.namespace,
        dry_run: req.dry_run.unwrap_or(false),
        object: req.object,
    };
    if request.namespace.is_empty() {
        // Not as the API server sends it: the namespace from the object's metadata, if any.
        let pod = request.pod(&EnvNames::default()).unwrap_or_default();
        let ns = pod.pointer("/metadata/namespace").and_then(Value::as_str);
        request.namespace = Cow::Owned(ns.unwrap_or_default().to_string());
    }
    Ok(request)
}

/// Why a body that does not parse as an AdmissionReview is not one, with its uid if any.
fn diagnose(body: &[u8], e: serde_json::Error) -> Unreadable {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Unreadable::new(None, ReviewError::NotJson(e.to_string()));
    };
    let text = |pointer: &str| v.pointer(pointer).and_then(Value::as_str);
    let uid = text("/request/uid").map(str::to_string);
    let api_version = text("/apiVersion").unwrap_or_default().to_string();
    let kind = text("/kind").unwrap_or_default().to_string();
    if api_version != API_VERSION || kind != KIND {
        return Unreadable::new(uid, ReviewError::NotAdmissionReview { api_version, kind });
    }
    Unreadable::new(uid, ReviewError::NotJson(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn review(object: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u1",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "team-a",
                "operation": "CREATE",
                "object": object,
                "dryRun": true
            }
        }))
        .unwrap()
    }

    #[test]
    fn parses_a_pod_review() {
        let pod = json!({"metadata": {}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        let body = review(pod.clone());
        let r = parse_review(&body).unwrap();
        assert_eq!(r.uid, "u1");
        assert_eq!(r.namespace, "team-a");
        assert_eq!(r.operation, "CREATE");
        assert!(r.dry_run);
        assert_eq!(r.pod(&EnvNames::all()).unwrap(), pod);
    }

    /// The strings are borrowed from the body when they can be, and read whole when escaped.
    #[test]
    fn escaped_strings_read_as_their_text() {
        let pod = json!({"spec": {"containers": []}});
        let plain = review(pod);
        let escaped = String::from_utf8(plain.clone())
            .unwrap()
            .replace(r#""uid":"u1""#, r#""uid":"u\u0031""#)
            .replace(r#""namespace":"team-a""#, r#""namespace":"team\u002da""#)
            .replace(r#""operation":"CREATE""#, r#""operation":"CRE\u0041TE""#);
        assert_ne!(escaped.as_bytes(), plain);
        let (p, e) = (
            parse_review(&plain).unwrap(),
            parse_review(escaped.as_bytes()).unwrap(),
        );
        assert!(matches!(p.uid, Cow::Borrowed(_)));
        assert!(matches!(e.uid, Cow::Owned(_)));
        for r in [p, e] {
            assert_eq!(
                (&*r.uid, &*r.namespace, &*r.operation),
                ("u1", "team-a", "CREATE")
            );
        }
    }

    /// A body that is not UTF-8 is not JSON, even where its bytes are in a string the webhook
    /// skips; serde_json's error says where, when it finds one.
    #[test]
    fn a_body_not_utf8_is_not_json() {
        let pod = json!({"metadata": {"labels": {"a": "b"}}, "spec": {"containers": []}});
        let body = String::from_utf8(review(pod)).unwrap();
        let with = |from: &str, to: &[u8]| {
            let (head, tail) = body.split_once(from).unwrap();
            [head.as_bytes(), to, tail.as_bytes()].concat()
        };
        let skipped = with(r#""operation""#, b"\"x\":\"\xff\",\"operation\"");
        let uid = with(r#""uid":"u1""#, b"\"uid\":\"u\xff\"");
        let label = with(r#""a":"b""#, b"\"a\":\"\xff\"");
        let lookup = |_: &str| -> Slice<MlflowWorkspaceBinding> { Arc::new([]) };
        let error = |body: &[u8]| {
            parse_review_for(body, &lookup)
                .unwrap_err()
                .error
                .to_string()
        };
        assert!(std::str::from_utf8(&skipped).is_err());
        assert!(error(&skipped).contains("the body is not UTF-8: invalid utf-8"));
        assert!(parse_review(&skipped).is_err());
        for body in [&uid, &label] {
            assert!(error(body).contains("invalid unicode code point at line 1"));
        }
        assert!(parse_review(&uid).is_err());
    }

    #[test]
    fn the_namespace_falls_back_to_the_objects() {
        let mut v: Value = serde_json::from_slice(&review(
            json!({"metadata": {"namespace": "team-b"}, "spec": {"containers": []}}),
        ))
        .unwrap();
        v["request"].as_object_mut().unwrap().remove("namespace");
        let body = serde_json::to_vec(&v).unwrap();
        assert_eq!(parse_review(&body).unwrap().namespace, "team-b");
        v["request"]["object"] = Value::Null;
        let body = serde_json::to_vec(&v).unwrap();
        let r = parse_review(&body).unwrap();
        assert_eq!(
            (&*r.namespace, r.pod(&EnvNames::all()).unwrap()),
            ("", Value::Null)
        );
    }

    /// The webhook's one pass gives what reading the review and then its pod gives, whatever
    /// the order of the request's fields; the namespace's bindings are looked up once.
    #[test]
    fn one_pass_reads_what_two_passes_read() {
        let b: MlflowWorkspaceBinding = serde_json::from_value(json!({
            "metadata": {"name": "b", "namespace": "team-a"},
            "spec": {"trackingUri": "http://m", "env": [{"name": "TEAM_SETTING", "value": "x"}]}
        }))
        .unwrap();
        let pod = json!({"metadata": {"namespace": "team-a"}, "spec": {"containers": [{"name": "c",
            "env": [{"name": "TEAM_SETTING", "value": "y"}, {"name": "OTHER", "value": "z"}],
            "resources": {"limits": {"cpu": "1"}}}]}});
        let api_server = String::from_utf8(review(pod.clone())).unwrap();
        let object_first = format!(
            r#"{{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {{"object": {pod},
               "uid": "u1", "kind": {{"group": "", "version": "v1", "kind": "Pod"}}, "namespace": "team-a", "operation": "CREATE"}}}}"#
        );
        let no_namespace = api_server.replace(r#""namespace":"team-a","#, "");
        let null_object = String::from_utf8(review(Value::Null)).unwrap();
        // (case, body, read in the same pass)
        for (case, body, same_pass) in [
            ("as the API server sends it", &api_server, true),
            ("object before namespace", &object_first, false),
            ("no request.namespace", &no_namespace, false),
            ("null object", &null_object, true),
        ] {
            let calls = std::cell::Cell::new(0);
            let lookup = |ns: &str| -> Slice<MlflowWorkspaceBinding> {
                calls.set(calls.get() + 1);
                assert_eq!(ns, "team-a", "{case}");
                Arc::new([Arc::new(b.clone())])
            };
            let two = parse_review(body.as_bytes()).unwrap();
            let mut one = parse_review_for(body.as_bytes(), &lookup).unwrap();
            assert_eq!(
                matches!(one.object, Object::Read { .. }),
                same_pass,
                "{case}"
            );
            let (bindings, read) = one.take(&lookup).unwrap();
            assert_eq!(read, two.pod(&EnvNames::of([&b])).unwrap(), "{case}");
            assert_eq!((bindings.len(), calls.get()), (1, 1), "{case}");
            assert_eq!((one.uid, one.namespace), (two.uid, two.namespace), "{case}");
        }
    }

    #[test]
    fn rejects_what_it_cannot_review_with_a_reason() {
        let edited = |edit: fn(&mut Value)| {
            let mut v: Value = serde_json::from_slice(&review(json!({}))).unwrap();
            edit(&mut v);
            serde_json::to_vec(&v).unwrap()
        };
        let wrong_kind = edited(|v| {
            v["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"})
        });
        let v1beta1 = edited(|v| v["apiVersion"] = json!("admission.k8s.io/v1beta1"));
        let no_uid = edited(|v| {
            v["request"].as_object_mut().unwrap().remove("uid");
        });
        let cases: Vec<(&str, Vec<u8>, Option<&str>, &str)> = vec![
            ("not json", b"{nope".to_vec(), None, "not JSON"),
            ("empty", Vec::new(), None, "not JSON"),
            ("array", b"[]".to_vec(), None, "AdmissionReview"),
            ("v1beta1", v1beta1, Some("u1"), "admissionReviewVersions"),
            ("no uid", no_uid, None, "uid"),
            ("deployment", wrong_kind, Some("u1"), "apps/v1/Deployment"),
        ];
        for (name, body, uid, msg) in cases {
            let Unreadable {
                uid: got_uid,
                error,
            } = parse_review(&body).unwrap_err();
            let one_pass = parse_review_for(&body, &|_| Arc::new([])).unwrap_err();
            assert_eq!(one_pass.uid, got_uid, "{name}");
            assert_eq!(got_uid.as_deref(), uid, "{name}");
            assert!(error.to_string().contains(msg), "{name}: {error}");
        }
    }
}
