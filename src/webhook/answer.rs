//! Building the answer to an AdmissionReview: the JSON the API server reads, the HTTP status,
//! and the outcome the admissions metric counts.

use base64::Engine;
use http::StatusCode;
use serde_json::{Value, json};

use super::review::{ReviewError, Unreadable};
use crate::inject::Plan;

/// The webhook's answer to one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    /// The metric label of the outcome (`mlflow_operator_admissions_total{outcome}`).
    pub outcome: String,
}

impl Answer {
    /// The answer for a plan.
    pub fn planned(uid: &str, plan: &Plan) -> Self {
        Self {
            status: StatusCode::OK,
            body: review_response(uid, plan),
            outcome: outcome_label(plan),
        }
    }

    /// Allowed unchanged: only new pods are mutated, a running pod's env cannot change.
    pub fn skipped_operation(uid: &str) -> Self {
        Self {
            status: StatusCode::OK,
            body: review_response(uid, &Plan::Allow { warnings: vec![] }),
            outcome: "skipped-operation".into(),
        }
    }

    /// A request the webhook cannot read: an AdmissionReview refusal when it has a uid (so the
    /// API server shows the reason), else a plain 400.
    pub fn unreadable(u: &Unreadable) -> Self {
        let (status, body) = match &u.uid {
            Some(uid) => (StatusCode::OK, error_response(uid, &u.error)),
            None => (
                StatusCode::BAD_REQUEST,
                json!({"error": format!("mlflow-operator: {}", u.error)}),
            ),
        };
        Self {
            status,
            body,
            outcome: format!("error-{}", u.error.label()),
        }
    }
}

/// The AdmissionReview answer for a plan.
pub fn review_response(uid: &str, plan: &Plan) -> Value {
    let mut r = json!({"uid": uid, "allowed": true});
    let warnings = match plan {
        Plan::Inject {
            patch, warnings, ..
        } => {
            if !patch.0.is_empty() {
                let raw = serde_json::to_vec(patch).expect("a JSON patch serializes");
                r["patchType"] = json!("JSONPatch");
                r["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(raw));
            }
            warnings
        }
        Plan::Allow { warnings } => warnings,
        Plan::Refuse(refusal) => {
            r["allowed"] = json!(false);
            r["status"] = json!({"code": 403, "reason": "Forbidden", "message": refusal.message});
            return admission_review(r);
        }
    };
    if !warnings.is_empty() {
        r["warnings"] = json!(warnings);
    }
    admission_review(r)
}

/// An AdmissionReview that refuses a request the webhook cannot read.
pub fn error_response(uid: &str, err: &ReviewError) -> Value {
    admission_review(json!({
        "uid": uid,
        "allowed": false,
        "status": {"code": 400, "reason": "BadRequest", "message": format!("mlflow-operator: {err}")}
    }))
}

fn admission_review(response: Value) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

/// The metric label of a plan's outcome.
pub fn outcome_label(plan: &Plan) -> String {
    match plan {
        Plan::Inject { patch, .. } if patch.0.is_empty() => "unchanged".into(),
        Plan::Inject { .. } => "injected".into(),
        Plan::Allow { .. } => "allowed-without-binding".into(),
        Plan::Refuse(refusal) => format!("refused-{}", refusal.reason.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inject::{Refusal, RefusalReason};

    #[test]
    fn responses_carry_patch_warnings_or_refusal() {
        let patch: json_patch::Patch = serde_json::from_value(
            json!([{"op": "add", "path": "/metadata/annotations", "value": {}}]),
        )
        .unwrap();
        let r = review_response(
            "u",
            &Plan::Inject {
                binding: "b".into(),
                patch,
                warnings: vec!["w".into()],
            },
        );
        assert_eq!(r["response"]["allowed"], true);
        assert_eq!(r["response"]["patchType"], "JSONPatch");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(r["response"]["patch"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&raw).unwrap()[0]["op"],
            "add"
        );
        assert_eq!(r["response"]["warnings"], json!(["w"]));

        let empty = review_response(
            "u",
            &Plan::Inject {
                binding: "b".into(),
                patch: json_patch::Patch(vec![]),
                warnings: vec![],
            },
        );
        assert!(
            empty["response"].get("patch").is_none(),
            "an empty patch is no patch"
        );
        assert!(empty["response"].get("warnings").is_none());

        let refused = review_response(
            "u",
            &Plan::Refuse(Refusal::new(RefusalReason::NoBinding, "m".into(), None)),
        );
        assert_eq!(refused["response"]["allowed"], false);
        assert_eq!(refused["response"]["status"]["code"], 403);
        assert_eq!(refused["response"]["status"]["message"], "m");
        assert!(refused["response"].get("warnings").is_none());
    }

    #[test]
    fn unreadable_requests_answer_with_the_reason() {
        for (uid, status, outcome) in [
            (Some("u"), StatusCode::OK, "error-malformed"),
            (None, StatusCode::BAD_REQUEST, "error-malformed"),
        ] {
            let a = Answer::unreadable(&Unreadable {
                uid: uid.map(str::to_string),
                error: ReviewError::NoUid,
            });
            assert_eq!((a.status, a.outcome.as_str()), (status, outcome));
            let message = match uid {
                Some(_) => &a.body["response"]["status"]["message"],
                None => &a.body["error"],
            };
            assert!(
                message.as_str().unwrap().contains("no request.uid"),
                "{}",
                a.body
            );
        }
    }
}
