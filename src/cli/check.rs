//! `mlflow-operator check`: a checklist of the live install, in the style of `linkerd check` and
//! `cmctl check api`. Each failure says what is wrong and how to fix it; the exit status is 0 only
//! when nothing failed.

mod install;
mod pods;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::Api;
use serde_json::{Value, json};

use super::CheckArgs;
use super::checklist::Checklist;
use super::cluster::{self, Admission};
use crate::binding::{INJECTED_ANNOTATION, TRACK_LABEL};
use crate::crd;

/// Runs `mlflow-operator check`; returns the exit status.
pub async fn run(args: &CheckArgs) -> i32 {
    let list = checks(args).await;
    print!("{}", list.render(args.output));
    list.exit_code()
}

/// Every check, in order; later ones are skipped when what they need is missing.
pub async fn checks(args: &CheckArgs) -> Checklist {
    let mut list = Checklist::default();
    let Some(client) = api(&mut list, args).await else {
        return list;
    };
    crd(&mut list, &client).await;
    let installs = install::webhook_config(&mut list, &client).await;
    match installs.first() {
        Some(i) => install::operator(&mut list, &client, i).await,
        None => {
            for what in [
                "the webhook Service has ready endpoints",
                install::CA_BUNDLE,
                "the operator pods are Ready",
                "the controller Lease is held and renewed",
            ] {
                list.skip("webhook", what, "no webhook configuration to follow");
            }
        }
    }
    end_to_end(&mut list, &client, args.namespace.as_deref()).await;
    pods::bindings(&mut list, &client, args.namespace.as_deref()).await;
    list
}

async fn api(list: &mut Checklist, args: &CheckArgs) -> Option<Client> {
    let name = "the API server answers";
    let client = match crate::run::client(args.kubeconfig.as_deref()).await {
        Ok(c) => c,
        Err(e) => {
            let fix =
                "pass --kubeconfig, or set KUBECONFIG to a kubeconfig of the cluster".to_string();
            list.fail("kubernetes-api", name, format!("{e:#}"), fix);
            return None;
        }
    };
    match client.apiserver_version().await {
        Ok(v) => {
            list.pass_with(
                "kubernetes-api",
                name,
                format!("Kubernetes {}", v.git_version),
            );
            Some(client)
        }
        Err(e) => {
            let fix = "check the kubeconfig's server address and credentials (kubectl version)"
                .to_string();
            list.fail("kubernetes-api", name, e.to_string(), fix);
            None
        }
    }
}

/// The CRD is installed, at this binary's revision or a later one, and has every field it
/// writes; an identical schema passes silently, any other difference is a warning.
async fn crd(list: &mut Checklist, client: &Client) {
    let ours = crd::definition();
    let name = crd::name();
    let what = format!("the CRD {name} is installed and has every field of this release");
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let live = match api.get_opt(&name).await {
        Ok(live) => live,
        Err(e) => {
            let fix = "check that you may get customresourcedefinitions".to_string();
            return list.fail("kubernetes-api", what, e.to_string(), fix);
        }
    };
    let verdict = crd::judge(live.as_ref());
    if let Some(problem) = verdict.problem() {
        return list.fail("kubernetes-api", what, problem, crd_fix(&verdict));
    }
    let live = live.expect("a CRD with no problem exists");
    let revision = crd::revision(&live);
    let detail = if let Some(warning) = verdict.warning() {
        warning
    } else if revision != crd::REVISION || schemas(&live) != schemas(&ours) {
        format!(
            "revision {revision}, its schema differs from mlflow-operator {}'s (revision {}) in validation or columns only",
            env!("CARGO_PKG_VERSION"),
            crd::REVISION
        )
    } else {
        return list.pass_with("kubernetes-api", what, format!("revision {revision}"));
    };
    let fix = format!(
        "fine while the operator and this CLI are of different releases; otherwise apply this release's CRD: {}",
        crd::APPLY
    );
    list.warn("kubernetes-api", what, detail, fix);
}

fn crd_fix(verdict: &crd::Verdict) -> String {
    match verdict {
        crd::Verdict::Absent => format!(
            "helm install mlflow-operator charts/mlflow-operator -n mlflow-operator --create-namespace (it installs crds/), or {}",
            crd::APPLY
        ),
        _ => format!(
            "the operator upgrades its CRD at start with the chart's crds.upgrade=true (then kubectl rollout restart the operator's Deployment); or apply it: {}",
            crd::APPLY
        ),
    }
}

/// What must match between two CRDs: names, and each version's schema and columns.
fn schemas(crd: &CustomResourceDefinition) -> Value {
    let versions: Vec<Value> = crd
        .spec
        .versions
        .iter()
        .map(|v| {
            let columns = &v.additional_printer_columns;
            json!([
                v.name,
                v.served,
                v.storage,
                v.schema,
                v.subresources,
                columns
            ])
        })
        .collect();
    // The API server fills in the names a CRD may leave out.
    let mut names = crd.spec.names.clone();
    names
        .list_kind
        .get_or_insert_with(|| format!("{}List", names.kind));
    names
        .singular
        .get_or_insert_with(|| names.kind.to_lowercase());
    json!({"names": names, "scope": crd.spec.scope, "versions": versions})
}

/// A dry-run of a labelled probe pod through the API server reaches the webhook and comes back.
async fn end_to_end(list: &mut Checklist, client: &Client, namespace: Option<&str>) {
    let ns = namespace.unwrap_or("default");
    let what =
        format!("the webhook answers a dry-run pod in namespace {ns} through the API server");
    let probe = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "mlflow-operator-check-", "labels": {TRACK_LABEL: "true"}},
        "spec": {"containers": [{"name": "probe", "image": "mlflow-operator-check-probe"}]},
    });
    let admission = match cluster::dry_run(client, ns, &probe).await {
        Ok(a) => a,
        Err(e) => {
            return list.fail(
                "webhook",
                what,
                format!("{e:#}"),
                "check the API server".into(),
            );
        }
    };
    match admission {
        Admission::Admitted { pod, .. } if pod["metadata"]["annotations"][INJECTED_ANNOTATION].is_string() => {
            let by = pod["metadata"]["annotations"][INJECTED_ANNOTATION].as_str().unwrap_or_default();
            list.pass_with("webhook", what, format!("injected (binding {by}); nothing was stored"));
        }
        Admission::Admitted { warnings, .. } if warnings.iter().any(|w| w.starts_with("mlflow-operator")) => {
            list.pass_with("webhook", what, format!("admitted unchanged with the webhook's warning: {}", warnings.join("; ")));
        }
        Admission::Admitted { .. } => list.fail("webhook", what,
            "the probe pod was admitted without an answer from the webhook: the namespace is excluded by its namespaceSelector, or the webhook failed and its failurePolicy is Ignore".into(),
            "run check with -n set to a namespace of your training pods; see the operator pods' logs (kubectl logs -n <operator namespace> -l app.kubernetes.io/name=mlflow-operator)".into()),
        Admission::Refused { message } => list.pass_with("webhook", what, format!("refused as it should be here: {message}")),
        Admission::Unreachable { message } => {
            let fix = if message.contains("x509") || message.contains("certificate") {
                "the caBundle does not verify the operator's certificate: let the operator rewrite it (kubectl rollout restart -n <operator namespace> deployment/mlflow-operator) or fix webhook.certificates"
            } else {
                "make the operator pods Ready (kubectl get pods -n <operator namespace>; kubectl scale deployment/mlflow-operator --replicas=2)"
            };
            list.fail("webhook", what, message, fix.to_string());
        }
        Admission::Failed { status, message } => list.fail("webhook", what,
            format!("the API server refused the probe (HTTP {status}): {message}"),
            "check that you may create pods in this namespace, or pass -n with one where you may".into()),
    }
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    use super::*;
    use crate::binding::MlflowWorkspaceBinding;

    #[test]
    fn the_schema_comparison_ignores_what_the_api_server_fills_in_only() {
        let ours = MlflowWorkspaceBinding::crd();
        let mut served = ours.clone();
        served.spec.names.list_kind = Some("MlflowWorkspaceBindingList".into());
        served.spec.names.singular = Some("mlflowworkspacebinding".into());
        assert_eq!(schemas(&served), schemas(&ours));
        let mut older = served.clone();
        older.spec.versions[0].additional_printer_columns = None;
        older.spec.versions[0].schema = None;
        assert_ne!(schemas(&older), schemas(&ours));
    }
}
