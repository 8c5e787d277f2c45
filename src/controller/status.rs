//! The status the controller wants a binding to have, computed without I/O.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::binding::{MlflowWorkspaceBinding, MlflowWorkspaceBindingStatus, READY};

/// What resolving a binding gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    Resolved {
        tracking_uri: String,
        message: String,
    },
    Failed {
        reason: &'static str,
        message: String,
    },
}

pub const RESOLVED: &str = "Resolved";

/// The status for `binding` after `res`. Keeps the last good tracking URI while a refresh
/// fails, and the Ready condition's lastTransitionTime while its status does not change.
pub fn desired_status(
    binding: &MlflowWorkspaceBinding,
    res: &Resolution,
    now: jiff::Timestamp,
) -> MlflowWorkspaceBindingStatus {
    let old = binding.status.clone().unwrap_or_default();
    let generation = binding.metadata.generation;
    let (status, reason, message, tracking_uri) = match res {
        Resolution::Resolved {
            tracking_uri,
            message,
        } => (
            "True",
            RESOLVED,
            message.clone(),
            Some(tracking_uri.clone()),
        ),
        Resolution::Failed { reason, message } => {
            ("False", *reason, message.clone(), old.tracking_uri.clone())
        }
    };
    let last_transition_time = match old.ready() {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        // The API server keeps seconds only; so do we, so a re-read compares equal.
        _ => Time(jiff::Timestamp::from_second(now.as_second()).unwrap_or(now)),
    };
    let ready = Condition {
        type_: READY.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time,
    };
    let mut status = MlflowWorkspaceBindingStatus {
        observed_generation: generation,
        tracking_uri,
        registry_uri: binding.spec.registry_uri.clone(),
        conditions: old.conditions,
    };
    status.set_ready(ready);
    status
}

/// The Ready status ("True"/"False") before and after, when it changed.
pub fn ready_transition<'a>(
    old: Option<&'a MlflowWorkspaceBindingStatus>,
    new: &'a MlflowWorkspaceBindingStatus,
) -> Option<(Option<&'a str>, &'a str)> {
    let ready = |s: &'a MlflowWorkspaceBindingStatus| s.ready().map(|c| c.status.as_str());
    let before = old.and_then(ready);
    let after = ready(new)?;
    (before != Some(after)).then_some((before, after))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binding::MlflowWorkspaceBindingSpec;

    fn binding(
        generation: i64,
        status: Option<MlflowWorkspaceBindingStatus>,
    ) -> MlflowWorkspaceBinding {
        let mut b = MlflowWorkspaceBinding::new(
            "b",
            MlflowWorkspaceBindingSpec {
                tracking_uri: Some("https://mlflow.example.com".into()),
                registry_uri: Some("https://registry.example.com".into()),
                ..Default::default()
            },
        );
        b.metadata.generation = Some(generation);
        b.status = status;
        b
    }

    fn t(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(s).unwrap()
    }

    fn ok(uri: &str) -> Resolution {
        Resolution::Resolved {
            tracking_uri: uri.into(),
            message: "resolved".into(),
        }
    }

    fn failed() -> Resolution {
        Resolution::Failed {
            reason: "Forbidden",
            message: "grant Reader".into(),
        }
    }

    #[test]
    fn first_resolve_sets_everything() {
        let s = desired_status(&binding(1, None), &ok("azureml://a"), t(100));
        assert_eq!(s.observed_generation, Some(1));
        assert_eq!(s.tracking_uri.as_deref(), Some("azureml://a"));
        assert_eq!(
            s.registry_uri.as_deref(),
            Some("https://registry.example.com")
        );
        let c = &s.conditions[0];
        assert_eq!(
            (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
            ("Ready", "True", "Resolved")
        );
        assert_eq!(c.observed_generation, Some(1));
        assert_eq!(c.last_transition_time.0, t(100));
        assert_eq!(ready_transition(None, &s), Some((None, "True")));
    }

    #[test]
    fn same_result_is_the_same_status() {
        let first = desired_status(&binding(1, None), &ok("azureml://a"), t(100));
        let again = desired_status(&binding(1, Some(first.clone())), &ok("azureml://a"), t(500));
        assert_eq!(first, again, "no change means no write");
        assert_eq!(ready_transition(Some(&first), &again), None);
    }

    #[test]
    fn failure_keeps_the_last_good_uri_and_moves_the_transition_time() {
        let good = desired_status(&binding(1, None), &ok("azureml://a"), t(100));
        let bad = desired_status(&binding(1, Some(good.clone())), &failed(), t(200));
        assert_eq!(bad.tracking_uri.as_deref(), Some("azureml://a"));
        let c = &bad.conditions[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "Forbidden")
        );
        assert_eq!(c.message, "grant Reader");
        assert_eq!(c.last_transition_time.0, t(200));
        assert_eq!(
            ready_transition(Some(&good), &bad),
            Some((Some("True"), "False"))
        );
        // Still failing, with another message: no transition, same time.
        let bad2 = desired_status(
            &binding(1, Some(bad.clone())),
            &Resolution::Failed {
                reason: "ArmUnavailable",
                message: "503".into(),
            },
            t(300),
        );
        assert_eq!(bad2.conditions[0].last_transition_time.0, t(200));
        assert_eq!(bad2.conditions[0].reason, "ArmUnavailable");
        assert_eq!(ready_transition(Some(&bad), &bad2), None);
    }

    #[test]
    fn new_uri_or_generation_changes_status_but_not_transition_time() {
        let a = desired_status(&binding(1, None), &ok("azureml://a"), t(100));
        let b = desired_status(&binding(1, Some(a.clone())), &ok("azureml://b"), t(200));
        assert_ne!(a, b);
        assert_eq!(b.conditions[0].last_transition_time.0, t(100));
        let g2 = desired_status(&binding(2, Some(b.clone())), &ok("azureml://b"), t(300));
        assert_eq!(g2.observed_generation, Some(2));
        assert_eq!(g2.conditions[0].observed_generation, Some(2));
        assert_eq!(g2.conditions[0].last_transition_time.0, t(100));
    }

    #[test]
    fn sub_second_now_is_truncated() {
        let now = jiff::Timestamp::new(100, 999_000_000).unwrap();
        let s = desired_status(&binding(1, None), &ok("x"), now);
        assert_eq!(s.conditions[0].last_transition_time.0, t(100));
    }
}
