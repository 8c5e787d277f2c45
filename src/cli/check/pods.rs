//! The bindings' checks: each is Ready, and every opted-in pod carries its binding's current
//! injection (the same counting as the controller's status.pods, [`crate::tracking`]).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use super::super::checklist::Checklist;
use crate::binding::{MlflowWorkspaceBinding, TRACK_LABEL};
use crate::tracking::{self, Owner};

const CAT: &str = "bindings and pods";

/// Bindings Ready, pods current, pods without a binding.
pub async fn bindings(list: &mut Checklist, client: &Client, namespace: Option<&str>) {
    let (bindings, pods) = match read(client, namespace).await {
        Ok(found) => found,
        Err(e) => {
            let fix = "check that you may list mlflowworkspacebindings and pods".to_string();
            return list.fail(CAT, "bindings and opted-in pods can be read", e, fix);
        }
    };
    ready(list, &bindings);
    current(list, &bindings, &pods);
}

type ByNamespace<T> = BTreeMap<String, Vec<T>>;

async fn read(
    client: &Client,
    namespace: Option<&str>,
) -> Result<(ByNamespace<MlflowWorkspaceBinding>, ByNamespace<ObjectMeta>), String> {
    let (b_api, p_api): (Api<MlflowWorkspaceBinding>, Api<Pod>) = match namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let bindings = b_api
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing bindings: {e}"))?;
    let opted_in = ListParams::default().labels(&format!("{TRACK_LABEL}=true"));
    let pods = p_api
        .list_metadata(&opted_in)
        .await
        .map_err(|e| format!("listing pods: {e}"))?;
    let mut b: ByNamespace<MlflowWorkspaceBinding> = BTreeMap::new();
    for x in bindings.items {
        b.entry(x.namespace().unwrap_or_default())
            .or_default()
            .push(x);
    }
    let mut p: ByNamespace<ObjectMeta> = BTreeMap::new();
    for x in pods.items {
        p.entry(x.namespace().unwrap_or_default())
            .or_default()
            .push(x.metadata);
    }
    Ok((b, p))
}

fn ready(list: &mut Checklist, bindings: &ByNamespace<MlflowWorkspaceBinding>) {
    let what = "every MlflowWorkspaceBinding is Ready";
    let all: Vec<&MlflowWorkspaceBinding> = bindings.values().flatten().collect();
    let not_ready: Vec<String> = all
        .iter()
        .filter(|b| !b.is_ready())
        .map(|b| {
            let why = b
                .ready_condition()
                .map_or("no Ready condition yet".to_string(), |c| {
                    format!("Ready {} ({}): {}", c.status, c.reason, c.message)
                });
            format!(
                "{}/{}: {why}",
                b.namespace().unwrap_or_default(),
                b.name_any()
            )
        })
        .collect();
    if not_ready.is_empty() {
        list.pass_with(CAT, what, format!("{} Ready", all.len()));
        return;
    }
    let first = all
        .iter()
        .find(|b| !b.is_ready())
        .map(|b| (b.namespace().unwrap_or_default(), b.name_any()));
    let (ns, name) = first.unwrap_or_default();
    let detail = format!(
        "{} of {} not Ready; their pods are refused:\n{}",
        not_ready.len(),
        all.len(),
        not_ready.join("\n")
    );
    list.fail(
        CAT,
        what,
        detail,
        format!("fix what each message says, then watch it: kubectl describe mwb -n {ns} {name}"),
    );
}

fn current(
    list: &mut Checklist,
    bindings: &ByNamespace<MlflowWorkspaceBinding>,
    pods: &ByNamespace<ObjectMeta>,
) {
    let what = "every opted-in pod carries its binding's current injection";
    let (mut lines, mut fixes, mut total) = (Vec::new(), Vec::new(), 0);
    for (ns, in_ns) in bindings {
        let refs: Vec<&MlflowWorkspaceBinding> = in_ns.iter().collect();
        let ns_pods = pods.get(ns).map(Vec::as_slice).unwrap_or_default();
        for b in &refs {
            let report = tracking::report(b, ns_pods.iter(), &refs);
            total += report.counts.total();
            for behind in &report.behind {
                lines.push(format!(
                    "{ns}/{}: {}: {}",
                    b.name_any(),
                    behind.describe(),
                    behind.pods.join(" ")
                ));
                fixes.push(behind.owner.fix(ns, &behind.pods));
            }
        }
    }
    if lines.is_empty() {
        list.pass_with(CAT, what, format!("{} current", tracking::pods(total)));
    } else {
        list.fail(CAT, what, lines.join("\n"), fixes.join("\n         "));
    }
    unselected(list, bindings, pods);
}

/// Opted-in pods no binding selects: refused at admission, or admitted unchanged (allow).
fn unselected(
    list: &mut Checklist,
    bindings: &ByNamespace<MlflowWorkspaceBinding>,
    pods: &ByNamespace<ObjectMeta>,
) {
    let what = "every opted-in pod has a binding";
    let mut lines = Vec::new();
    for (ns, in_ns) in pods {
        let refs: Vec<&MlflowWorkspaceBinding> = bindings.get(ns).into_iter().flatten().collect();
        for pod in in_ns.iter().filter(|p| tracking::is_tracked(p)) {
            if tracking::selecting(pod, ns, &refs).is_none() {
                lines.push(format!(
                    "{ns}/{} ({})",
                    pod.name.clone().unwrap_or_default(),
                    Owner::of(pod)
                ));
            }
        }
    }
    if lines.is_empty() {
        list.pass(CAT, what);
    } else {
        list.warn(CAT, what, format!("{} labelled {TRACK_LABEL}: \"true\" that no binding selects (none, or several, match; or the one named is missing); they do not track:\n{}", tracking::pods(lines.len() as i64), lines.join("\n")),
            "mlflow-operator explain -n <namespace> pod/<name> says why for each".into());
    }
}
