//! What the installed operator may and may not do, as the API server judges it: Pod Security
//! "restricted" for its pod, and RBAC checked with SubjectAccessReviews for its ServiceAccount.

use std::collections::BTreeMap;

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

/// One question to the API server's authorizer: may the subject `verb` this resource?
#[derive(Debug)]
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

    let own_secret = installed.flag("--cert-secret");
    let lease = installed.flag("--lease-name");
    let own_mwc = fullname.as_str();
    let other_mwc = format!("{fullname}-other");
    let bindings = "mlflowworkspacebindings";
    let crd = "mlflowworkspacebindings.mlflow-operator.io";
    let mut denied = vec![
        // Secrets: never outside its own namespace, never listed, only its own by name.
        ask("get", "", "secrets", "", test_ns),
        ask("list", "", "secrets", "", test_ns),
        ask("watch", "", "secrets", "", test_ns),
        ask("get", "", "secrets", "", ""),
        ask("list", "", "secrets", "", ""),
        ask("watch", "", "secrets", "", ""),
        ask("get", "", "secrets", "sp-creds", test_ns),
        ask("create", "", "secrets", "", test_ns),
        ask("list", "", "secrets", "", release_ns),
        ask("watch", "", "secrets", "", release_ns),
        ask("get", "", "secrets", "other", release_ns),
        ask("patch", "", "secrets", own_secret, release_ns),
        ask("delete", "", "secrets", own_secret, release_ns),
        // Pods are answered about and watched (metadata only, for status.pods), never touched.
        ask("get", "", "pods", "", test_ns),
        ask("create", "", "pods", "", test_ns),
        ask("update", "", "pods", "", test_ns),
        ask("patch", "", "pods", "", test_ns),
        ask("delete", "", "pods", "", test_ns),
        ask("create", "", "pods/exec", "", test_ns),
        ask("get", "", "pods/log", "", test_ns),
        ask("create", "", "pods/eviction", "", test_ns),
        // ServiceAccounts are read for their annotations; no tokens are minted.
        ask("create", "", "serviceaccounts/token", "", test_ns),
        ask("create", "", "serviceaccounts/token", "", release_ns),
        ask("create", "", "serviceaccounts", "", test_ns),
        ask("update", "", "serviceaccounts", "", test_ns),
        ask("patch", "", "serviceaccounts", "", test_ns),
        ask("delete", "", "serviceaccounts", "", test_ns),
        // Its own MutatingWebhookConfiguration's caBundle only.
        ask(
            "get",
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations",
            &other_mwc,
            "",
        ),
        ask(
            "patch",
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations",
            &other_mwc,
            "",
        ),
        ask(
            "update",
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations",
            own_mwc,
            "",
        ),
        ask(
            "delete",
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations",
            own_mwc,
            "",
        ),
        ask(
            "list",
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations",
            "",
            "",
        ),
        ask(
            "watch",
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations",
            "",
            "",
        ),
        ask(
            "create",
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations",
            "",
            "",
        ),
        ask(
            "patch",
            "admissionregistration.k8s.io",
            "validatingwebhookconfigurations",
            own_mwc,
            "",
        ),
        // Bindings are the teams': read, and only their status written.
        ask("create", "mlflow-operator.io", bindings, "", test_ns),
        ask("update", "mlflow-operator.io", bindings, "", test_ns),
        ask("patch", "mlflow-operator.io", bindings, "", test_ns),
        ask("delete", "mlflow-operator.io", bindings, "", test_ns),
        ask(
            "update",
            "mlflow-operator.io",
            "mlflowworkspacebindings/status",
            "",
            test_ns,
        ),
        ask(
            "update",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            crd,
            "",
        ),
        ask(
            "delete",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            crd,
            "",
        ),
        // Its own Lease only, in its own namespace.
        ask("get", "coordination.k8s.io", "leases", "other", release_ns),
        ask(
            "patch",
            "coordination.k8s.io",
            "leases",
            "other",
            release_ns,
        ),
        ask("list", "coordination.k8s.io", "leases", "", release_ns),
        ask("update", "coordination.k8s.io", "leases", lease, release_ns),
        ask("delete", "coordination.k8s.io", "leases", lease, release_ns),
        ask("create", "coordination.k8s.io", "leases", "", test_ns),
        ask("get", "coordination.k8s.io", "leases", lease, test_ns),
        // Nothing else of the cluster.
        ask("get", "", "configmaps", "", test_ns),
        ask("list", "", "configmaps", "", release_ns),
        ask("get", "", "nodes", "", ""),
        ask("list", "", "nodes", "", ""),
        ask("list", "", "namespaces", "", ""),
        ask("create", "", "events", "", test_ns),
        ask("delete", "events.k8s.io", "events", "", test_ns),
        ask("update", "apps", "deployments", fullname, release_ns),
        ask(
            "create",
            "rbac.authorization.k8s.io",
            "clusterrolebindings",
            "",
            "",
        ),
        ask(
            "escalate",
            "rbac.authorization.k8s.io",
            "clusterroles",
            "",
            "",
        ),
        ask("bind", "rbac.authorization.k8s.io", "clusterroles", "", ""),
        ask("impersonate", "", "serviceaccounts", "", test_ns),
        ask("impersonate", "", "users", "", ""),
    ];
    // The operator reads bindings through watches only: not one by one.
    denied.push(ask("get", "mlflow-operator.io", bindings, "", test_ns));
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
    if let Err(e) = pods.create(&dry, &pod).await {
        panic!("the chart's pod is not Pod Security restricted: {e}");
    }
    // And the check is real: a privileged pod is refused in that namespace.
    let mut bad = pod.clone();
    bad.spec.as_mut().unwrap().containers[0]
        .security_context
        .as_mut()
        .unwrap()
        .allow_privilege_escalation = Some(true);
    assert!(
        pods.create(&dry, &bad).await.is_err(),
        "PodSecurity admission did not refuse allowPrivilegeEscalation: true"
    );
}
