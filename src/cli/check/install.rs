//! The install's checks: the webhook configuration, its Service and endpoints, the caBundle
//! against the certificate the operator serves, the operator pods and the controller Lease.

use k8s_openapi::api::admissionregistration::v1::ServiceReference;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, PodSpec, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use super::super::checklist::Checklist;
use super::super::cluster::{self, Install};

mod cert;

pub use cert::WHAT as CA_BUNDLE;

const CAT: &str = "webhook";

pub async fn webhook_config(list: &mut Checklist, client: &Client) -> Vec<Install> {
    let what = "the MutatingWebhookConfiguration exists";
    let installs = match cluster::installs(client).await {
        Ok(i) => i,
        Err(e) => {
            list.fail(
                CAT,
                what,
                format!("{e:#}"),
                "check that you may list mutatingwebhookconfigurations".into(),
            );
            return Vec::new();
        }
    };
    match installs.as_slice() {
        [] => list.fail(CAT, what,
            format!("no MutatingWebhookConfiguration holds webhook {}: no pod is injected", cluster::WEBHOOK_NAME),
            "helm install mlflow-operator charts/mlflow-operator -n mlflow-operator --create-namespace".into()),
        [one] => {
            let w = &one.webhook;
            let detail = format!("{} (failurePolicy {}, timeoutSeconds {})", one.config,
                w.failure_policy.as_deref().unwrap_or("Fail"), w.timeout_seconds.unwrap_or(10));
            list.pass_with(CAT, what, detail);
        }
        many => {
            let names: Vec<&str> = many.iter().map(|i| i.config.as_str()).collect();
            list.warn(CAT, what, format!("{} configurations hold webhook {}: {}; each pod is injected by every one of them", many.len(), cluster::WEBHOOK_NAME, names.join(", ")),
                "uninstall all but one release".into());
        }
    }
    installs
}

/// The checks that follow the configuration to the operator.
pub async fn operator(list: &mut Checklist, client: &Client, install: &Install) {
    let ca = install
        .webhook
        .client_config
        .ca_bundle
        .as_ref()
        .map(|b| b.0.clone())
        .unwrap_or_default();
    let Some(svc) = install.webhook.client_config.service.clone() else {
        let url = install
            .webhook
            .client_config
            .url
            .clone()
            .unwrap_or_default();
        for what in [
            "the webhook Service has ready endpoints",
            "the operator pods are Ready",
            "the controller Lease is held and renewed",
        ] {
            list.skip(
                CAT,
                what,
                &format!("the webhook is called at a URL ({url}), not through a Service"),
            );
        }
        return cert::url(list, &url, &ca).await;
    };
    endpoints(list, client, &svc).await;
    let (pods, specs) = operator_pods(list, client, &svc).await;
    cert::service(list, client, &svc, &specs, &ca).await;
    lease(list, client, &svc.namespace, &pods).await;
}

async fn endpoints(list: &mut Checklist, client: &Client, svc: &ServiceReference) {
    let what = "the webhook Service has ready endpoints";
    let (ns, name) = (svc.namespace.as_str(), svc.name.as_str());
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={name}"));
    let ready = match slices.list(&lp).await {
        Ok(l) => l
            .items
            .iter()
            .flat_map(|s| s.endpoints.iter().flatten())
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
            .count(),
        Err(e) => {
            return list.fail(
                CAT,
                what,
                e.to_string(),
                "check that you may list endpointslices".into(),
            );
        }
    };
    if ready > 0 {
        list.pass_with(CAT, what, format!("Service {ns}/{name}: {ready} ready"));
    } else {
        list.fail(CAT, what, format!("Service {ns}/{name} has no ready endpoint: the API server has no operator to call, so every labelled pod is refused (failurePolicy Fail) or admitted without injection (Ignore)"),
            format!("start the operator: kubectl get deploy,pods -n {ns}; kubectl scale deployment -n {ns} <the operator's deployment> --replicas=2"));
    }
}

/// The pods behind the Service, with a check that they exist and are Ready; and their specs, or
/// with no pod (scaled to 0) their Deployment's template: where the certificate Secret is named.
async fn operator_pods(
    list: &mut Checklist,
    client: &Client,
    svc: &ServiceReference,
) -> (Vec<Pod>, Vec<PodSpec>) {
    let what = "the operator pods are Ready";
    let ns = svc.namespace.as_str();
    let (selector, pods) = match pods_behind(client, svc).await {
        Ok(found) => found,
        Err((detail, fix)) => {
            list.fail(CAT, what, detail, fix);
            return (Vec::new(), Vec::new());
        }
    };
    if pods.is_empty() {
        let found = deployment(client, ns, &selector).await;
        let deploy = found.as_ref().map_or_else(
            || "<the operator's deployment>".to_string(),
            |d| format!("deployment/{}", d.name_any()),
        );
        let specs = found
            .into_iter()
            .filter_map(|d| d.spec.template.spec)
            .collect();
        list.fail(CAT, what, format!("no operator pod in namespace {ns} (the Deployment is scaled to 0 or cannot create pods)"),
            format!("kubectl scale -n {ns} {deploy} --replicas=2; kubectl describe -n {ns} {deploy}"));
        return (pods, specs);
    }
    let not_ready: Vec<String> = pods
        .iter()
        .filter(|p| !is_ready(p))
        .map(|p| p.name_any())
        .collect();
    match not_ready.first() {
        Some(first) => list.fail(
            CAT,
            what,
            format!(
                "{} of {} not Ready: {}",
                not_ready.len(),
                pods.len(),
                not_ready.join(", ")
            ),
            format!("kubectl describe pod -n {ns} {first}; kubectl logs -n {ns} {first}"),
        ),
        None => list.pass_with(CAT, what, format!("{} Ready in namespace {ns}", pods.len())),
    }
    let specs = pods.iter().filter_map(|p| p.spec.clone()).collect();
    (pods, specs)
}

type Selector = std::collections::BTreeMap<String, String>;

/// The Service's selector and the pods it selects; or what went wrong and its fix.
async fn pods_behind(
    client: &Client,
    svc: &ServiceReference,
) -> Result<(Selector, Vec<Pod>), (String, String)> {
    let ns = svc.namespace.as_str();
    let selector = match Api::<Service>::namespaced(client.clone(), ns)
        .get_opt(&svc.name)
        .await
    {
        Ok(Some(s)) => s.spec.and_then(|s| s.selector).unwrap_or_default(),
        Ok(None) => {
            let detail = format!("Service {ns}/{} does not exist", svc.name);
            return Err((detail, "helm upgrade --install the release again".into()));
        }
        Err(e) => return Err((e.to_string(), "check that you may get services".into())),
    };
    let labels: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    match Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&labels.join(",")))
        .await
    {
        Ok(l) => Ok((selector, l.items)),
        Err(e) => Err((e.to_string(), "check that you may list pods".into())),
    }
}

fn is_ready(p: &Pod) -> bool {
    let conditions = p.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == crate::binding::TRUE)
}

/// The Deployment whose pods the Service selects.
async fn deployment(client: &Client, ns: &str, selector: &Selector) -> Option<Deployment> {
    let found = Api::<Deployment>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await;
    let matches = |d: &Deployment| {
        let labels = d
            .spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.as_ref());
        labels.is_some_and(|l| selector.iter().all(|(k, v)| l.get(k) == Some(v)))
    };
    found.ok()?.items.into_iter().find(matches)
}

/// A Lease of the operator's namespace is held by one of its pods and was renewed in time.
async fn lease(list: &mut Checklist, client: &Client, ns: &str, pods: &[Pod]) {
    let what = "the controller Lease is held and renewed";
    let leases = match Api::<Lease>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
    {
        Ok(l) => l.items,
        Err(e) => {
            return list.fail(
                CAT,
                what,
                e.to_string(),
                "check that you may list leases".into(),
            );
        }
    };
    let names: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
    let held = leases.iter().find(|l| {
        let holder = l.spec.as_ref().and_then(|s| s.holder_identity.as_ref());
        holder.is_some_and(|h| names.contains(h))
    });
    let Some(lease) = held else {
        return list.fail(CAT, what, format!("no Lease in namespace {ns} is held by an operator pod: no controller resolves bindings or counts pods"),
            format!("kubectl get leases -n {ns}; kubectl logs -n {ns} -l app.kubernetes.io/name=mlflow-operator"));
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    let age = spec
        .renew_time
        .map(|t| jiff::Timestamp::now().as_second() - t.0.as_second());
    match age {
        Some(age) if age <= duration * 2 => list.pass_with(
            CAT,
            what,
            format!(
                "{} held by {}, renewed {age}s ago",
                lease.name_any(),
                spec.holder_identity.unwrap_or_default()
            ),
        ),
        _ => list.fail(
            CAT,
            what,
            format!(
                "Lease {ns}/{} was last renewed {} ago (duration {duration}s): its holder is stuck",
                lease.name_any(),
                age.map_or("never".into(), |a| format!("{a}s"))
            ),
            format!(
                "kubectl delete pod -n {ns} {}",
                spec.holder_identity.unwrap_or_default()
            ),
        ),
    }
}

/// The Secret names the operator pods serve their certificate from: `--cert-secret` of the
/// self-managed mode, else the Secret volumes they mount.
fn cert_secrets(specs: &[PodSpec]) -> Vec<String> {
    let mut names = Vec::new();
    for spec in specs {
        for args in spec.containers.iter().filter_map(|c| c.args.as_ref()) {
            let self_signed = args.iter().any(|a| a == "--self-signed");
            for (i, a) in args.iter().enumerate() {
                let value = a
                    .strip_prefix("--cert-secret=")
                    .map(str::to_string)
                    .or_else(|| {
                        (a == "--cert-secret")
                            .then(|| args.get(i + 1).cloned())
                            .flatten()
                    });
                names.extend(value.filter(|_| self_signed));
            }
        }
        let volumes = spec
            .volumes
            .iter()
            .flatten()
            .filter_map(|v| v.secret.as_ref()?.secret_name.clone());
        names.extend(volumes);
    }
    names.sort();
    names.dedup();
    names
}

async fn served_cert(client: &Client, ns: &str, specs: &[PodSpec]) -> Result<Vec<u8>, String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut last = format!("the operator pods name no certificate Secret in namespace {ns}");
    for name in cert_secrets(specs) {
        match secrets.get_opt(&name).await {
            Ok(Some(s)) => match s.data.and_then(|d| d.get("tls.crt").cloned()) {
                Some(crt) => return Ok(crt.0),
                None => last = format!("Secret {ns}/{name} has no tls.crt"),
            },
            Ok(None) => last = format!("Secret {ns}/{name} does not exist"),
            Err(e) => last = format!("reading Secret {ns}/{name}: {e}"),
        }
    }
    Err(last)
}
