//! `mlflow-operator explain -n NS KIND/NAME`: why a pod, or the pods of a workload, is or is not
//! tracking. The verdict uses the webhook's own rules ([`crate::tracking`], the planner's binding
//! choice); what the webhook would do now comes from the real webhook, through a server-side
//! dry-run of the pod (template) as it stands.

mod object;
mod webhook;

use serde::Serialize;

use super::{ExplainArgs, Output};
use crate::binding::{MlflowWorkspaceBinding, TRACK_LABEL};
use crate::tracking::{self, Owner, PodState};
use object::Target;
pub use webhook::{ContainerPlan, WebhookAnswer};

/// Everything `explain` found, as printed by `-o json`.
#[derive(Debug, Serialize)]
pub struct Explanation {
    pub object: String,
    pub namespace: String,
    /// Whether its pods track (a live pod: injected and current; a template: would be injected).
    pub tracking: bool,
    /// The plain sentence that says why.
    pub verdict: String,
    /// How to fix it, when it does not track.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// For a live pod: what it got when it was created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<Live>,
    /// What the webhook does with it now (None when the webhook never sees it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookAnswer>,
}

/// A live pod's injection, compared with its binding now.
#[derive(Debug, Serialize)]
pub struct Live {
    /// `injected`, `stale` or `notInjected`.
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binding: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    pub detail: String,
}

/// Runs `mlflow-operator explain`; returns the exit status (1 when it could not explain).
pub async fn run(args: &ExplainArgs) -> i32 {
    match explain(args).await {
        Ok(e) => {
            match args.output {
                Output::Json => {
                    println!("{}", serde_json::to_string_pretty(&e).unwrap_or_default())
                }
                Output::Text => print!("{}", text(&e)),
            }
            0
        }
        Err(e) => {
            eprintln!("mlflow-operator explain: {e:#}");
            1
        }
    }
}

pub async fn explain(args: &ExplainArgs) -> anyhow::Result<Explanation> {
    let client = crate::run::client(args.kubeconfig.as_deref()).await?;
    let ns = args.namespace.as_str();
    let target = object::read(&client, ns, &args.object).await?;
    let bindings = object::bindings(&client, ns).await?;
    let refs: Vec<&MlflowWorkspaceBinding> = bindings.iter().collect();
    let live = target.live.as_ref().map(|pod| live(pod, ns, &refs));
    let excluded = webhook::excluded(&client, ns).await?;
    let webhook = match (target.labelled(), &excluded) {
        (true, None) => Some(webhook::ask(&client, ns, &target).await?),
        _ => None,
    };
    let (tracking, verdict, fix) = verdict(&target, ns, &refs, excluded.as_deref(), live.as_ref());
    Ok(Explanation {
        object: args.object.clone(),
        namespace: ns.to_string(),
        tracking,
        verdict,
        fix,
        live,
        webhook,
    })
}

/// The sentence for the first reason in the webhook's own order: the label, the namespace, the
/// binding choice, readiness; then, for a live pod, whether what it got is current.
fn verdict(
    target: &Target,
    ns: &str,
    bindings: &[&MlflowWorkspaceBinding],
    excluded: Option<&str>,
    live: Option<&Live>,
) -> (bool, String, Option<String>) {
    let what = &target.display;
    if !target.labelled() {
        let verdict = format!(
            "{what} is not labelled {TRACK_LABEL}: \"true\": the webhook never sees its pods, and they do not track"
        );
        return (
            false,
            verdict,
            Some(format!(
                "add the label {TRACK_LABEL}: \"true\" to {}",
                target.label_place()
            )),
        );
    }
    if let Some(config) = excluded {
        let verdict = format!(
            "namespace {ns} is excluded by the namespaceSelector of the webhook configuration {config}: pods there never reach the webhook, and do not track"
        );
        return (
            false,
            verdict,
            Some(format!(
                "run the pods in another namespace, or remove {ns} from the chart's webhook.excludeNamespaces"
            )),
        );
    }
    let b = match tracking::selecting(&target.meta, ns, bindings) {
        Some(b) => b,
        None => return no_binding(target, ns, bindings),
    };
    let name = b.metadata.name.clone().unwrap_or_default();
    if !b.is_ready() {
        let why = b
            .ready_condition()
            .map_or("it has no Ready condition yet".to_string(), |c| {
                format!("Ready is {} ({}): {}", c.status, c.reason, c.message)
            });
        let verdict = format!(
            "binding {name} selects {what} but is not Ready, so the webhook refuses its pods: {why}"
        );
        return (
            false,
            verdict,
            Some(format!(
                "fix what the condition says, then check: kubectl describe mwb -n {ns} {name}"
            )),
        );
    }
    match live {
        Some(l) if l.state != PodState::Injected.as_str() => {
            let fix = Owner::of(&target.meta).fix(ns, std::slice::from_ref(&target.name));
            (
                false,
                format!("binding {name} selects {what}, but {}", l.detail),
                Some(fix),
            )
        }
        Some(l) => (
            true,
            format!("binding {name} selects {what}; {}", l.detail),
            None,
        ),
        None => (
            true,
            format!(
                "binding {name} (generation {}) selects {what} and is Ready: its new pods are injected",
                b.metadata.generation.unwrap_or(0)
            ),
            None,
        ),
    }
}

/// Why no binding selects the target: none matches, several do, or the named one is missing.
fn no_binding(
    target: &Target,
    ns: &str,
    bindings: &[&MlflowWorkspaceBinding],
) -> (bool, String, Option<String>) {
    let what = &target.display;
    let named = target
        .meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::binding::BINDING_ANNOTATION));
    let selector = |b: &&&MlflowWorkspaceBinding| {
        let labels: std::collections::BTreeMap<&str, &str> = target
            .meta
            .labels
            .iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        crate::inject::selector_matches(b.spec.pod_selector.as_ref(), &labels)
    };
    let matching: Vec<String> = bindings
        .iter()
        .filter(selector)
        .filter_map(|b| b.metadata.name.clone())
        .collect();
    let (verdict, fix) = match (named, matching.len()) {
        (Some(n), _) => (
            format!(
                "{what} names binding {n} (annotation {}), but namespace {ns} has no binding of that name: the webhook refuses its pods",
                crate::binding::BINDING_ANNOTATION
            ),
            format!("create binding {n} in namespace {ns}, or name an existing one"),
        ),
        (None, 0) => (
            format!(
                "no MlflowWorkspaceBinding in namespace {ns} selects {what}: the webhook refuses its pods (or admits them unchanged with webhook.onMissingBinding: allow)"
            ),
            format!(
                "create a binding in namespace {ns} (examples/bindings/), or widen the podSelector of one"
            ),
        ),
        (None, n) => (
            format!(
                "{n} bindings select {what} ({}): the webhook cannot choose and refuses its pods",
                matching.join(", ")
            ),
            format!(
                "set the annotation {} to one of them on {}, or make their podSelectors disjoint",
                crate::binding::BINDING_ANNOTATION,
                target.label_place()
            ),
        ),
    };
    (false, verdict, Some(fix))
}

/// A live pod's injected annotations against the binding that selects it now.
fn live(
    pod: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    ns: &str,
    bindings: &[&MlflowWorkspaceBinding],
) -> Live {
    let got = pod.annotations.as_ref().and_then(tracking::injection);
    let (binding, generation) = (
        got.as_ref().map(|g| g.binding.to_string()),
        got.as_ref().and_then(|g| g.generation),
    );
    let Some(b) = tracking::selecting(pod, ns, bindings) else {
        let detail = match &binding {
            Some(n) => format!("the pod was injected by binding {n}, which no longer selects it"),
            None => "the pod carries no injection".to_string(),
        };
        return Live {
            state: if binding.is_some() {
                "stale"
            } else {
                "notInjected"
            },
            binding,
            generation,
            detail,
        };
    };
    let state = tracking::state(pod, b);
    let now = b.metadata.generation.unwrap_or(0);
    let detail = match (&got, state) {
        (_, PodState::Injected) => format!("the pod was injected by it at generation {now}, which is what it injects now"),
        (None, _) => "the pod carries no injection: it was created before the webhook was installed, while the webhook was unreachable, or admitted unchanged (webhook.onMissingBinding: allow)".to_string(),
        (Some(g), _) if Some(g.binding) != b.metadata.name.as_deref() => format!("the pod was injected by binding {} instead", g.binding),
        (Some(g), _) if g.generation != Some(now) => format!("the pod is stale: it was injected at generation {}, and the binding is at generation {now} now", g.generation.map_or("?".to_string(), |g| g.to_string())),
        (Some(_), _) => "the pod is stale: it was injected with a tracking URI the binding has since replaced".to_string(),
    };
    Live {
        state: state.as_str(),
        binding,
        generation,
        detail,
    }
}

fn text(e: &Explanation) -> String {
    let mark = if e.tracking { "√" } else { "×" };
    let mut out = format!("{mark} {}\n", e.verdict);
    if let Some(fix) = &e.fix {
        out.push_str(&format!("  fix: {fix}\n"));
    }
    if let Some(w) = &e.webhook {
        out.push_str(&w.text());
    }
    out
}
