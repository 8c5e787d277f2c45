//! What the installed operator may and may not do, as the API server judges it: Pod Security
//! "restricted" for its pod, and RBAC checked with SubjectAccessReviews for its ServiceAccount.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use super::release::Installed;
use crate::common::eventually;

/// One question to the API server's authorizer: may the subject `verb` this resource?
#[derive(Clone, Debug)]
struct Ask<'a> {
    verb: &'a str,
    group: &'a str,
    /// `resource` or `resource/subresource`.
    resource: &'a str,
    /// Empty: any name.
    name: &'a str,
    /// Empty: every namespace (or a cluster-scoped resource).
    namespace: &'a str,
}

fn ask<'a>(
    verb: &'a str,
    group: &'a str,
    resource: &'a str,
    name: &'a str,
    namespace: &'a str,
) -> Ask<'a> {
    Ask {
        verb,
        group,
        resource,
        name,
        namespace,
    }
}

/// Every verb of `verbs` on `resource` (in `group`, named `name`) in each of `namespaces`.
fn asks<'a>(
    verbs: &[&'a str],
    group: &'a str,
    resource: &'a str,
    name: &'a str,
    namespaces: &[&'a str],
) -> Vec<Ask<'a>> {
    let each_ns = |verb: &'a str| {
        namespaces
            .iter()
            .map(move |ns| ask(verb, group, resource, name, ns))
    };
    verbs.iter().flat_map(|verb| each_ns(verb)).collect()
}

/// What the operator must never be allowed.
fn denied<'a>(installed: &'a Installed, other_mwc: &'a str) -> Vec<Ask<'a>> {
    let (test, release) = (installed.test_ns.as_str(), installed.release_ns.as_str());
    let (own_secret, lease) = (
        installed.flag("--cert-secret"),
        installed.flag("--lease-name"),
    );
    let own_mwc = installed.fullname.as_str();
    let (webhooks, vwc) = (
        "admissionregistration.k8s.io",
        "validatingwebhookconfigurations",
    );
    let mwc = "mutatingwebhookconfigurations";
    let (bindings, ours) = ("mlflowworkspacebindings", "mlflow-operator.io");
    let crd = "mlflowworkspacebindings.mlflow-operator.io";
    let (leases, coordination) = ("leases", "coordination.k8s.io");
    let rbac = "rbac.authorization.k8s.io";
    let every = "";
    [
        // Secrets: never outside its own namespace, never listed, only its own by name.
        asks(&["get", "list", "watch"], "", "secrets", "", &[test, every]),
        asks(&["get"], "", "secrets", "sp-creds", &[test]),
        asks(&["create"], "", "secrets", "", &[test]),
        asks(&["list", "watch"], "", "secrets", "", &[release]),
        asks(&["get"], "", "secrets", "other", &[release]),
        asks(&["patch", "delete"], "", "secrets", own_secret, &[release]),
        // Pods are answered about and watched (metadata only, for status.pods), never touched.
        asks(
            &["get", "create", "update", "patch", "delete"],
            "",
            "pods",
            "",
            &[test],
        ),
        asks(&["create"], "", "pods/exec", "", &[test]),
        asks(&["get"], "", "pods/log", "", &[test]),
        asks(&["create"], "", "pods/eviction", "", &[test]),
        // ServiceAccounts are read for their annotations; no tokens are minted.
        asks(
            &["create"],
            "",
            "serviceaccounts/token",
            "",
            &[test, release],
        ),
        asks(
            &["create", "update", "patch", "delete"],
            "",
            "serviceaccounts",
            "",
            &[test],
        ),
        // Its own MutatingWebhookConfiguration's caBundle only.
        asks(&["get", "patch"], webhooks, mwc, other_mwc, &[every]),
        asks(&["update", "delete"], webhooks, mwc, own_mwc, &[every]),
        asks(&["list", "watch", "create"], webhooks, mwc, "", &[every]),
        asks(&["patch"], webhooks, vwc, own_mwc, &[every]),
        // Bindings are the teams': read through watches only, and only their status written.
        asks(
            &["get", "create", "update", "patch", "delete"],
            ours,
            bindings,
            "",
            &[test],
        ),
        asks(
            &["update"],
            ours,
            "mlflowworkspacebindings/status",
            "",
            &[test],
        ),
        // Its own CRD is read and upgraded (server-side apply), never replaced or deleted; no
        // other CRD is touched, and none is created.
        asks(
            &["update", "delete"],
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            crd,
            &[every],
        ),
        asks(
            &["get", "patch"],
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "certificates.cert-manager.io",
            &[every],
        ),
        asks(
            &["create", "list", "watch"],
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "",
            &[every],
        ),
        // Its own Lease only, in its own namespace.
        asks(&["get", "patch"], coordination, leases, "other", &[release]),
        asks(&["list"], coordination, leases, "", &[release]),
        asks(
            &["update", "delete"],
            coordination,
            leases,
            lease,
            &[release],
        ),
        asks(&["create"], coordination, leases, "", &[test]),
        asks(&["get"], coordination, leases, lease, &[test]),
        // Nothing else of the cluster.
        asks(&["get"], "", "configmaps", "", &[test]),
        asks(&["list"], "", "configmaps", "", &[release]),
        asks(&["get", "list"], "", "nodes", "", &[every]),
        asks(&["list"], "", "namespaces", "", &[every]),
        asks(&["create"], "", "events", "", &[test]),
        asks(&["delete"], "events.k8s.io", "events", "", &[test]),
        asks(&["update"], "apps", "deployments", own_mwc, &[release]),
        asks(&["create"], rbac, "clusterrolebindings", "", &[every]),
        asks(&["escalate", "bind"], rbac, "clusterroles", "", &[every]),
        asks(&["impersonate"], "", "serviceaccounts", "", &[test]),
        asks(&["impersonate"], "", "users", "", &[every]),
    ]
    .concat()
}

/// Least privilege, as the API server's authorizer answers SubjectAccessReviews for the chart's
/// ServiceAccount: every verb of every rule the installed ClusterRole and Role grant is allowed
/// (the cluster-wide ones in any namespace), and a list of what the operator must never do is
/// denied, Secrets outside its own above all.
pub async fn assert_least_privilege(installed: &Installed) {
    let Installed {
        client,
        test_ns,
        release_ns,
        fullname,
        ..
    } = installed;
    let (test_ns, release_ns) = (test_ns.as_str(), release_ns.as_str());
    let cluster_role = Api::<ClusterRole>::all(client.clone())
        .get(fullname)
        .await
        .unwrap();
    let role = Api::<Role>::namespaced(client.clone(), release_ns)
        .get(fullname)
        .await
        .unwrap();
    let mut granted = Vec::new();
    for (rules, namespaces) in [
        (cluster_role.rules.unwrap_or_default(), vec![test_ns, ""]),
        (role.rules.unwrap_or_default(), vec![release_ns]),
    ] {
        for rule in rules {
            let names = rule
                .resource_names
                .clone()
                .unwrap_or_else(|| vec![String::new()]);
            for (group, resource, verb, name, ns) in granted_by(&rule, &names, &namespaces) {
                granted.push((verb, group, resource, name, ns));
            }
        }
    }
    for (verb, group, resource, name, ns) in &granted {
        let a = ask(verb, group, resource, name, ns);
        assert!(
            authorized(installed, &a).await,
            "the chart grants {a:?} but the API server denies it"
        );
    }

    let other_mwc = format!("{fullname}-other");
    let denied = denied(installed, &other_mwc);
    for a in &denied {
        assert!(
            !authorized(installed, a).await,
            "the operator must not be allowed {a:?}"
        );
    }
    println!(
        "SubjectAccessReview for {}: {} granted verbs allowed, {} others denied",
        service_account(installed),
        granted.len(),
        denied.len()
    );
}

/// Every (group, resource, verb, name, namespace) a rule grants.
fn granted_by<'r>(
    rule: &'r k8s_openapi::api::rbac::v1::PolicyRule,
    names: &'r [String],
    namespaces: &'r [&'r str],
) -> impl Iterator<Item = (String, String, String, String, String)> + 'r {
    let groups = rule.api_groups.as_deref().unwrap_or_default();
    let resources = rule.resources.as_deref().unwrap_or_default();
    groups.iter().flat_map(move |g| {
        resources.iter().flat_map(move |r| {
            rule.verbs.iter().flat_map(move |v| {
                names.iter().flat_map(move |n| {
                    namespaces
                        .iter()
                        .map(move |ns| (g.clone(), r.clone(), v.clone(), n.clone(), ns.to_string()))
                })
            })
        })
    })
}

fn service_account(installed: &Installed) -> String {
    format!(
        "system:serviceaccount:{}:{}",
        installed.release_ns, installed.fullname
    )
}

/// The authorizer's answer for the chart's ServiceAccount (with the groups every
/// ServiceAccount token carries).
async fn authorized(installed: &Installed, a: &Ask<'_>) -> bool {
    let (resource, subresource) = match a.resource.split_once('/') {
        Some((r, s)) => (r, Some(s.to_string())),
        None => (a.resource, None),
    };
    let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(service_account(installed)),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{}", installed.release_ns),
                "system:authenticated".into(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(a.verb.to_string()),
                group: Some(a.group.to_string()),
                resource: Some(resource.to_string()),
                subresource,
                name: some(a.name),
                namespace: some(a.namespace),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SubjectAccessReview>::all(installed.client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("create a SubjectAccessReview");
    answer.status.expect("the authorizer's status").allowed
}

/// Server-side dry-run of a Pod with the Deployment's template in a namespace that enforces
/// Pod Security "restricted": the API server's PodSecurity admission decides.
pub async fn assert_pss_restricted(client: &Client, namespace: &str, deploy: &Deployment) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let labels: BTreeMap<&str, &str> = [
        ("pod-security.kubernetes.io/enforce", "restricted"),
        ("pod-security.kubernetes.io/enforce-version", "latest"),
    ]
    .into();
    namespaces
        .patch(
            namespace,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": labels}})),
        )
        .await
        .expect("label the release namespace restricted");
    let template = deploy.spec.template.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod = Pod {
        metadata: kube::api::ObjectMeta {
            generate_name: Some("pss-".into()),
            labels: template.metadata.and_then(|m| m.labels),
            ..Default::default()
        },
        spec: template.spec,
        ..Default::default()
    };
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    // The check is real: a pod that escalates privileges is refused. PodSecurity admission reads
    // namespace labels through an informer, so it enforces them shortly after the patch.
    let mut bad = pod.clone();
    bad.spec.as_mut().unwrap().containers[0]
        .security_context
        .as_mut()
        .unwrap()
        .allow_privilege_escalation = Some(true);
    let what = "PodSecurity admission to refuse allowPrivilegeEscalation: true";
    eventually(what, Duration::from_secs(30), || async {
        pods.create(&dry, &bad).await.is_err().then_some(())
    })
    .await;
    if let Err(e) = pods.create(&dry, &pod).await {
        panic!("the chart's pod is not Pod Security restricted: {e}");
    }
}
