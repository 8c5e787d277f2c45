//! Building the answer to an AdmissionReview: the JSON the API server reads, the HTTP status,
//! and the outcome the admissions metric counts.

use http::StatusCode;
use serde_json::{Value, json};

use super::review::Unreadable;
use crate::inject::{Patch, Plan, RefusalReason};

/// What became of one admission request: the `outcome` of `mlflow_operator_admissions_total`,
/// counted by the server for what never reaches a review, by the review for the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    Injected,
    /// Injected before (reinvocation): an empty patch.
    Unchanged,
    /// No binding applies and `onMissingBinding: allow`.
    AllowedWithoutBinding,
    /// Not a CREATE: a running pod's env cannot change.
    SkippedOperation,
    Refused(RefusalReason),
    /// Not an AdmissionReview the webhook can read.
    Malformed,
    /// An AdmissionReview of something other than a pod.
    WrongKind,
    /// Every connection was busy: a new one was closed at once.
    TooManyConnections,
    /// The body did not arrive within the limit.
    BodyTimeout,
    /// The body is over [`super::server::MAX_BODY`].
    TooLarge,
    /// Reading the body failed otherwise: the client went away, or its framing is broken.
    BodyRead,
}

impl Outcome {
    /// The metric label.
    pub fn metric_label(self) -> &'static str {
        match self {
            Outcome::Injected => "injected",
            Outcome::Unchanged => "unchanged",
            Outcome::AllowedWithoutBinding => "allowed-without-binding",
            Outcome::SkippedOperation => "skipped-operation",
            Outcome::Refused(reason) => reason.metric_label(),
            Outcome::Malformed => "error-malformed",
            Outcome::WrongKind => "error-wrong-kind",
            Outcome::TooManyConnections => "error-too-many-connections",
            Outcome::BodyTimeout => "error-body-timeout",
            Outcome::TooLarge => "error-too-large",
            Outcome::BodyRead => "error-body-read",
        }
    }

    /// The outcome of a plan.
    pub fn of(plan: &Plan) -> Self {
        match plan {
            Plan::Inject { patch, .. } if patch.is_empty() => Outcome::Unchanged,
            Plan::Inject { .. } => Outcome::Injected,
            Plan::Allow { .. } => Outcome::AllowedWithoutBinding,
            Plan::Refuse(refusal) => Outcome::Refused(refusal.reason),
        }
    }
}

/// The webhook's answer to one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: StatusCode,
    /// The JSON body, as sent.
    pub body: Vec<u8>,
    pub outcome: Outcome,
}

impl Answer {
    /// The answer for a plan.
    pub fn planned(uid: &str, plan: &Plan) -> Self {
        Self {
            status: StatusCode::OK,
            body: review_response(uid, plan),
            outcome: Outcome::of(plan),
        }
    }

    /// Allowed unchanged: only new pods are mutated, a running pod's env cannot change.
    pub fn skipped_operation(uid: &str) -> Self {
        Self {
            status: StatusCode::OK,
            body: review_response(uid, &Plan::Allow { warnings: vec![] }),
            outcome: Outcome::SkippedOperation,
        }
    }

    /// A request the webhook cannot read: an AdmissionReview refusal when it has a uid (so the
    /// API server shows the reason), else a plain 400.
    pub fn unreadable(u: &Unreadable) -> Self {
        let outcome = u.error.outcome();
        match &u.uid {
            Some(uid) => Self {
                status: StatusCode::OK,
                body: error_response(uid, &u.error),
                outcome,
            },
            None => Self::error(StatusCode::BAD_REQUEST, outcome, &u.error.to_string()),
        }
    }

    /// A plain HTTP error, for a request that is no AdmissionReview to answer.
    pub fn error(status: StatusCode, outcome: Outcome, message: &str) -> Self {
        Self {
            status,
            body: serde_json::to_vec(&error_body(message)).expect("JSON serializes"),
            outcome,
        }
    }
}

/// The body of every plain HTTP error the webhook answers.
pub fn error_body(message: &str) -> Value {
    json!({"error": format!("mlflow-operator: {message}")})
}

/// Every AdmissionReview answer up to its `response`.
const REVIEW_START: &[u8] =
    br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":"#;

/// The AdmissionReview answer for a plan, as sent: the members in the order they always had,
/// the patch base64-encoded. Written by hand around serde: serde_json scans every string it
/// writes for characters to escape, and the base64 patch, most of the answer, has none.
pub fn review_response(uid: &str, plan: &Plan) -> Vec<u8> {
    let (patch, warnings) = match plan {
        Plan::Inject {
            patch, warnings, ..
        } => (Some(patch).filter(|p| !p.is_empty()), warnings),
        Plan::Allow { warnings } => (None, warnings),
        Plan::Refuse(refusal) => {
            return admission_review(&Refused::new(uid, 403, "Forbidden", &refusal.message));
        }
    };
    let patch_len = patch.map_or(0, |p| p.json().len());
    let mut out = Vec::with_capacity(256 + patch_len / 3 * 4);
    out.extend_from_slice(REVIEW_START);
    out.extend_from_slice(br#"{"uid":"#);
    write_json(&mut out, uid);
    out.extend_from_slice(br#","allowed":true"#);
    if let Some(patch) = patch {
        out.extend_from_slice(br#","patchType":"JSONPatch","patch":""#);
        base64_into(&mut out, patch);
        out.push(b'"');
    }
    if !warnings.is_empty() {
        out.extend_from_slice(br#","warnings":"#);
        write_json(&mut out, warnings);
    }
    out.extend_from_slice(b"}}");
    out
}

fn write_json(out: &mut Vec<u8>, value: &(impl serde::Serialize + ?Sized)) {
    serde_json::to_writer(out, value).expect("JSON serializes");
}

/// Appends the patch's JSON, base64-encoded.
fn base64_into(out: &mut Vec<u8>, patch: &Patch) {
    base64_simd::STANDARD.encode_append(patch.json(), out);
}

/// An AdmissionReview that refuses a request the webhook cannot read, as sent.
pub fn error_response(uid: &str, err: &super::review::ReviewError) -> Vec<u8> {
    let message = format!("mlflow-operator: {err}");
    admission_review(&Refused::new(uid, 400, "BadRequest", &message))
}

/// A refusing `response`, its members in the order of the API server's own answers (a `json!`
/// map would sort them).
#[derive(serde::Serialize)]
struct Refused<'a> {
    uid: &'a str,
    allowed: bool,
    status: RefusalStatus<'a>,
}

#[derive(serde::Serialize)]
struct RefusalStatus<'a> {
    code: u16,
    reason: &'a str,
    message: &'a str,
}

impl<'a> Refused<'a> {
    fn new(uid: &'a str, code: u16, reason: &'a str, message: &'a str) -> Self {
        let status = RefusalStatus {
            code,
            reason,
            message,
        };
        Self {
            uid,
            allowed: false,
            status,
        }
    }
}

fn admission_review(response: &impl serde::Serialize) -> Vec<u8> {
    let mut out = REVIEW_START.to_vec();
    write_json(&mut out, response);
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inject::Refusal;
    use crate::webhook::review::ReviewError;
    use base64::Engine;

    fn json(body: &[u8]) -> Value {
        serde_json::from_slice(body).unwrap()
    }

    /// The answer as serde writes it, its members in the order the API server's docs give
    /// them: the reference the hand-written answer is held to.
    fn built_by_serde(uid: &str, plan: &Plan) -> Vec<u8> {
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Response<'a> {
            uid: &'a str,
            allowed: bool,
            #[serde(skip_serializing_if = "Option::is_none")]
            status: Option<RefusalStatus<'a>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            patch_type: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            patch: Option<String>,
            #[serde(skip_serializing_if = "<[String]>::is_empty")]
            warnings: &'a [String],
        }
        let mut r = Response {
            uid,
            allowed: true,
            status: None,
            patch_type: None,
            patch: None,
            warnings: &[],
        };
        match plan {
            Plan::Inject {
                patch, warnings, ..
            } => {
                if !patch.is_empty() {
                    let raw = serde_json::to_vec(&patch.operations()).unwrap();
                    r.patch_type = Some("JSONPatch");
                    r.patch = Some(base64::engine::general_purpose::STANDARD.encode(raw));
                }
                r.warnings = warnings;
            }
            Plan::Allow { warnings } => r.warnings = warnings,
            Plan::Refuse(refusal) => {
                r.allowed = false;
                r.status = Some(RefusalStatus {
                    code: 403,
                    reason: "Forbidden",
                    message: &refusal.message,
                });
            }
        }
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Review<'a> {
            api_version: &'a str,
            kind: &'a str,
            response: Response<'a>,
        }
        let review = Review {
            api_version: "admission.k8s.io/v1",
            kind: "AdmissionReview",
            response: r,
        };
        serde_json::to_vec(&review).unwrap()
    }

    #[test]
    fn the_answer_is_byte_for_byte_what_serde_writes() {
        let ops: json_patch::Patch = serde_json::from_value(json!([
            {"op": "add", "path": "/spec/containers/0/env/-", "value": {"name": "A", "value": "é\"\\\n$"}},
            {"op": "replace", "path": "/metadata/annotations/a~1b", "value": "x"},
        ]))
        .unwrap();
        let inject = |patch: Patch, warnings: &[&str]| Plan::Inject {
            binding: "b".into(),
            patch,
            warnings: warnings.iter().map(|w| w.to_string()).collect(),
        };
        let warnings = ["w \"quoted\" é", "\u{1}"];
        for plan in [
            inject(Patch::from(&ops), &warnings),
            inject(Patch::from(&ops), &[]),
            inject(Patch::default(), &warnings),
            inject(Patch::default(), &[]),
            Plan::Allow {
                warnings: vec!["no binding".into()],
            },
            Plan::Allow { warnings: vec![] },
            Plan::Refuse(Refusal::new(
                RefusalReason::NoBinding,
                "m \"é\"".into(),
                None,
            )),
        ] {
            for uid in ["705ab4f5-6393-11e8-b7cc-42010a800002", "u\"\\é\n"] {
                let got = review_response(uid, &plan);
                let want = built_by_serde(uid, &plan);
                assert_eq!(
                    String::from_utf8(got).unwrap(),
                    String::from_utf8(want).unwrap(),
                    "{plan:?}"
                );
            }
        }
    }

    #[test]
    fn responses_carry_patch_warnings_or_refusal() {
        let ops: json_patch::Patch = serde_json::from_value(
            json!([{"op": "add", "path": "/metadata/annotations", "value": {}}]),
        )
        .unwrap();
        let patch = Patch::from(&ops);
        let r = json(&review_response(
            "u",
            &Plan::Inject {
                binding: "b".into(),
                patch,
                warnings: vec!["w".into()],
            },
        ));
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

        let empty = json(&review_response(
            "u",
            &Plan::Inject {
                binding: "b".into(),
                patch: Patch::default(),
                warnings: vec![],
            },
        ));
        assert!(
            empty["response"].get("patch").is_none(),
            "an empty patch is no patch"
        );
        assert!(empty["response"].get("warnings").is_none());

        let refused = json(&review_response(
            "u",
            &Plan::Refuse(Refusal::new(RefusalReason::NoBinding, "m".into(), None)),
        ));
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
            assert_eq!((a.status, a.outcome.metric_label()), (status, outcome));
            let body = json(&a.body);
            let message = match uid {
                Some(_) => &body["response"]["status"]["message"],
                None => &body["error"],
            };
            assert!(
                message.as_str().unwrap().contains("no request.uid"),
                "{body}"
            );
        }
    }

    #[test]
    fn outcome_labels_keep_their_names() {
        let plan_outcomes = [
            (
                Plan::Inject {
                    binding: "b".into(),
                    patch: Patch::default(),
                    warnings: vec![],
                },
                "unchanged",
            ),
            (Plan::Allow { warnings: vec![] }, "allowed-without-binding"),
            (
                Plan::Refuse(Refusal::new(RefusalReason::NotReady, "m".into(), None)),
                "refused-binding-not-ready",
            ),
        ];
        for (plan, want) in plan_outcomes {
            assert_eq!(Outcome::of(&plan).metric_label(), want, "{plan:?}");
        }
        for (outcome, want) in [
            (Outcome::Injected, "injected"),
            (Outcome::SkippedOperation, "skipped-operation"),
            (
                Outcome::Refused(RefusalReason::NoCredential),
                "refused-no-azure-credential",
            ),
            (Outcome::Malformed, "error-malformed"),
            (Outcome::WrongKind, "error-wrong-kind"),
            (Outcome::TooManyConnections, "error-too-many-connections"),
            (Outcome::BodyTimeout, "error-body-timeout"),
            (Outcome::TooLarge, "error-too-large"),
            (Outcome::BodyRead, "error-body-read"),
        ] {
            assert_eq!(outcome.metric_label(), want);
        }
    }
}
