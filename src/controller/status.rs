//! The status the controller wants a binding to have, computed without I/O.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::binding::{
    FALSE, MlflowWorkspaceBinding, MlflowWorkspaceBindingStatus, READY, TRUE, UNKNOWN,
};
use crate::tracking::{self, Report};

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
        /// The source may answer again (ARM throttling, 5xx, timeouts): a last good URI of the
        /// same spec stays in use.
        transient: bool,
    },
    /// Still asking Azure: said at once on a binding that has no status yet, so it never sits
    /// without one while a slow credential or ARM answers.
    Resolving { message: String },
}

pub const RESOLVED: &str = "Resolved";
pub const RESOLVING: &str = "Resolving";
/// Ready stays True with the last good URI, but its refresh is failing.
pub const REFRESH_FAILING: &str = "RefreshFailing";

/// The URI pods keep getting while a transient failure lasts: the last good one, when the
/// binding was Ready with it for the spec it has now.
fn last_good_uri(binding: &MlflowWorkspaceBinding) -> Option<&str> {
    binding.readiness().ok()
}

/// The status for `binding` after `res`. Keeps the last good tracking URI while a refresh
/// fails, and the Ready condition's lastTransitionTime while its status does not change. A
/// transient failure leaves a Ready binding Ready (pods keep the last good URI: refusing them
/// because ARM throttles would stop training for nothing), with reason RefreshFailing and a
/// message that says why; a definitive one (403, 404, ...) makes it not Ready.
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
        } => (TRUE, RESOLVED, message.clone(), Some(tracking_uri.clone())),
        Resolution::Failed {
            transient: true,
            message,
            ..
        } if last_good_uri(binding).is_some() => {
            let uri = last_good_uri(binding).unwrap_or_default().to_string();
            let message = format!(
                "pods get the last good tracking URI {uri}; refreshing it is failing and is retried: {message}"
            );
            (TRUE, REFRESH_FAILING, message, Some(uri))
        }
        Resolution::Failed {
            reason, message, ..
        } => (FALSE, *reason, message.clone(), old.tracking_uri.clone()),
        Resolution::Resolving { message } => (
            UNKNOWN,
            RESOLVING,
            message.clone(),
            old.tracking_uri.clone(),
        ),
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
        pods: old.pods,
        conditions: old.conditions,
    };
    status.set_ready(ready);
    status
}

/// Sets `status.pods` and PodsCurrent from `report`, computed against the binding as it will
/// be once `status` is written (its URI is what pods are compared with).
pub fn set_pods(
    status: &mut MlflowWorkspaceBindingStatus,
    binding: &MlflowWorkspaceBinding,
    report: &Report,
    now: jiff::Timestamp,
) {
    let condition = tracking::condition(report, binding, status.pods_current(), now);
    status.pods = Some(report.counts.clone());
    status.set_pods_current(condition);
}

/// Whether `new` differs from `old` in its pods only (counts or PodsCurrent): such writes are
/// coalesced, a Ready or URI change never waits.
pub fn only_pods_changed(
    old: Option<&MlflowWorkspaceBindingStatus>,
    new: &MlflowWorkspaceBindingStatus,
) -> bool {
    old.is_some_and(|old| old.without_pods() == new.without_pods())
}

/// The PodsCurrent condition when its status or reason changed in a way worth an Event: any
/// change to False, and False back to True (a first True is no news).
pub fn pods_transition<'a>(
    old: Option<&MlflowWorkspaceBindingStatus>,
    new: &'a MlflowWorkspaceBindingStatus,
) -> Option<&'a Condition> {
    let before = old.and_then(MlflowWorkspaceBindingStatus::pods_current);
    let after = new.pods_current()?;
    let same = before.is_some_and(|b| (&b.status, &b.reason) == (&after.status, &after.reason));
    let news = after.status == FALSE || before.is_some_and(|b| b.status == FALSE);
    (!same && news).then_some(after)
}

/// The Ready status ([`TRUE`]/[`FALSE`]) before and after, when it changed.
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
            transient: false,
        }
    }

    fn throttled(message: &str) -> Resolution {
        Resolution::Failed {
            reason: "ArmUnavailable",
            message: message.into(),
            transient: true,
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
            (READY, TRUE, RESOLVED)
        );
        assert_eq!(c.observed_generation, Some(1));
        assert_eq!(c.last_transition_time.0, t(100));
        assert_eq!(ready_transition(None, &s), Some((None, TRUE)));
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
        assert_eq!((c.status.as_str(), c.reason.as_str()), (FALSE, "Forbidden"));
        assert_eq!(c.message, "grant Reader");
        assert_eq!(c.last_transition_time.0, t(200));
        assert_eq!(
            ready_transition(Some(&good), &bad),
            Some((Some(TRUE), FALSE))
        );
        // Still failing, with another message: no transition, same time.
        let bad2 = desired_status(&binding(1, Some(bad.clone())), &throttled("503"), t(300));
        assert_eq!(bad2.conditions[0].last_transition_time.0, t(200));
        assert_eq!(bad2.conditions[0].reason, "ArmUnavailable");
        assert_eq!(ready_transition(Some(&bad), &bad2), None);
    }

    #[test]
    fn transient_failure_keeps_ready_with_the_last_good_uri_and_says_so() {
        let good = desired_status(&binding(1, None), &ok("azureml://a"), t(100));
        let stale = desired_status(&binding(1, Some(good.clone())), &throttled("429"), t(200));
        assert_eq!(stale.tracking_uri.as_deref(), Some("azureml://a"));
        let c = &stale.conditions[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            (TRUE, REFRESH_FAILING)
        );
        assert!(
            c.message.contains("azureml://a") && c.message.contains("429"),
            "{}",
            c.message
        );
        assert_eq!(c.last_transition_time.0, t(100), "Ready never flipped");
        assert_eq!(ready_transition(Some(&good), &stale), None);
        // The same failure again is the same status: no write.
        let again = desired_status(&binding(1, Some(stale.clone())), &throttled("429"), t(300));
        assert_eq!(again, stale);
        // Recovery: Resolved again, with the new URI, still no transition.
        let back = desired_status(&binding(1, Some(stale.clone())), &ok("azureml://b"), t(400));
        assert_eq!(back.conditions[0].reason, RESOLVED);
        assert_eq!(back.tracking_uri.as_deref(), Some("azureml://b"));
        assert_eq!(back.conditions[0].last_transition_time.0, t(100));
    }

    #[test]
    fn transient_failure_without_a_good_uri_of_this_spec_is_not_ready() {
        // Never resolved.
        let s = desired_status(&binding(1, None), &throttled("500"), t(100));
        assert_eq!(s.conditions[0].status, FALSE);
        assert_eq!(s.conditions[0].reason, "ArmUnavailable");
        // Resolved for generation 1; the spec changed since: that URI is another workspace's.
        let good = desired_status(&binding(1, None), &ok("azureml://a"), t(100));
        let s = desired_status(&binding(2, Some(good)), &throttled("500"), t(200));
        assert_eq!(s.conditions[0].status, FALSE);
        // A definitive failure is not Ready even with a good URI.
        let good = desired_status(&binding(1, None), &ok("azureml://a"), t(100));
        let s = desired_status(&binding(1, Some(good)), &failed(), t(200));
        assert_eq!(s.conditions[0].status, FALSE);
    }

    #[test]
    fn resolving_is_ready_unknown_until_the_answer_comes() {
        let asking = Resolution::Resolving {
            message: "asking".into(),
        };
        let s = desired_status(&binding(1, None), &asking, t(100));
        let ready = s.ready().unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            (UNKNOWN, RESOLVING)
        );
        assert_eq!(s.tracking_uri, None);
        let done = desired_status(&binding(1, Some(s.clone())), &ok("azureml://a"), t(130));
        let ready = done.ready().unwrap();
        assert_eq!(
            (ready.status.as_str(), done.tracking_uri.as_deref()),
            (TRUE, Some("azureml://a"))
        );
        assert_eq!(ready.last_transition_time.0.as_second(), 130);
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
