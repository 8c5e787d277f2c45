//! Reading an AdmissionReview: only the fields the webhook uses, the pod kept as raw JSON.

use serde_json::Value;
use serde_json::value::RawValue;

use super::answer::Outcome;
use crate::inject::{EnvNames, parse_pod};

/// A parsed AdmissionReview request: only what the webhook needs, the object kept as the text
/// it came as (validated JSON), to be read once the namespace's bindings are known.
#[derive(Debug, Clone)]
pub struct ReviewRequest<'b> {
    pub uid: String,
    pub operation: String,
    pub namespace: String,
    pub dry_run: bool,
    object: Option<&'b RawValue>,
}

impl ReviewRequest<'_> {
    /// The pod as the planner reads it, with of each container's env the entries `env` keeps
    /// (null when the request has none).
    pub fn pod(&self, env: &EnvNames<'_>) -> Result<Value, ReviewError> {
        match self.object {
            Some(raw) => parse_pod(raw.get(), env).map_err(|e| ReviewError::NotJson(e.to_string())),
            None => Ok(Value::Null),
        }
    }
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

/// The parts of an AdmissionReview the webhook reads. Everything else (userInfo, oldObject,
/// options) is skipped while parsing instead of being built into JSON values.
#[derive(serde::Deserialize)]
struct RawReview<'b> {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(borrow)]
    request: Option<RawRequest<'b>>,
}

#[derive(serde::Deserialize)]
struct RawRequest<'b> {
    #[serde(default)]
    uid: String,
    kind: Option<RawGvk>,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    operation: String,
    /// Scanned, not built: what the planner reads of it is built later.
    #[serde(borrow, default)]
    object: Option<&'b RawValue>,
    #[serde(rename = "dryRun", default)]
    dry_run: Option<bool>,
}

#[derive(serde::Deserialize)]
struct RawGvk {
    #[serde(default)]
    group: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    kind: String,
}

const API_VERSION: &str = "admission.k8s.io/v1";
const KIND: &str = "AdmissionReview";

/// Parses an AdmissionReview of a pod.
pub fn parse_review(body: &[u8]) -> Result<ReviewRequest<'_>, Unreadable> {
    let raw: RawReview = serde_json::from_slice(body).map_err(|e| diagnose(body, e))?;
    let uid = raw
        .request
        .as_ref()
        .map(|r| r.uid.clone())
        .filter(|u| !u.is_empty());
    if raw.api_version != API_VERSION || raw.kind != KIND {
        let (api_version, kind) = (raw.api_version, raw.kind);
        let error = ReviewError::NotAdmissionReview { api_version, kind };
        return Err(Unreadable::new(uid, error));
    }
    let req = raw
        .request
        .ok_or(Unreadable::new(None, ReviewError::Missing("request")))?;
    let uid = uid.ok_or(Unreadable::new(None, ReviewError::NoUid))?;
    let err = |e| Unreadable::new(Some(uid.clone()), e);
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
        request.namespace = ns.unwrap_or_default().to_string();
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
            (r.namespace.as_str(), r.pod(&EnvNames::all()).unwrap()),
            ("", Value::Null)
        );
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
            assert_eq!(got_uid.as_deref(), uid, "{name}");
            assert!(error.to_string().contains(msg), "{name}: {error}");
        }
    }
}
