//! What the installed operator may and may not do, as the API server judges it: Pod Security
//! "restricted" for its pod, and RBAC checked with `kubectl auth can-i` as its ServiceAccount.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use super::release::Installed;

/// Least privilege, as the API server's authorizer sees the ServiceAccount.
pub async fn assert_least_privilege(installed: &Installed) {
    let Installed {
        test_ns,
        release_ns,
        fullname,
        ..
    } = installed;
    let (test_ns, release_ns) = (test_ns.as_str(), release_ns.as_str());
    let sa = format!("system:serviceaccount:{release_ns}:{fullname}");
    let other_mwc = format!("mutatingwebhookconfigurations/{fullname}-other");
    let own_mwc = format!("mutatingwebhookconfigurations/{fullname}");
    let own_secret = format!("secrets/{}", installed.flag("--cert-secret"));
    let lease = format!(
        "leases.coordination.k8s.io/{}",
        installed.flag("--lease-name")
    );
    let denied: Vec<Vec<&str>> = vec![
        vec!["delete", "pods", "-n", test_ns],
        vec!["create", "pods", "-n", test_ns],
        vec!["patch", "pods", "-n", test_ns],
        vec!["get", "secrets", "-n", test_ns],
        vec!["list", "secrets", "-n", release_ns],
        vec!["get", "secrets/other", "-n", release_ns],
        vec!["delete", &own_secret, "-n", release_ns],
        vec!["patch", &other_mwc],
        vec!["list", "mutatingwebhookconfigurations"],
        vec!["delete", &own_mwc],
        vec![
            "create",
            "mlflowworkspacebindings.mlflow-operator.io",
            "-n",
            test_ns,
        ],
        vec![
            "update",
            "mlflowworkspacebindings.mlflow-operator.io",
            "-n",
            test_ns,
        ],
        vec![
            "delete",
            "mlflowworkspacebindings.mlflow-operator.io",
            "-n",
            test_ns,
        ],
        vec!["patch", "serviceaccounts", "-n", test_ns],
        vec!["create", "serviceaccounts/token", "-n", test_ns],
        vec!["create", "leases.coordination.k8s.io", "-n", test_ns],
        vec!["delete", &lease, "-n", release_ns],
        vec![
            "patch",
            "leases.coordination.k8s.io/other",
            "-n",
            release_ns,
        ],
        vec!["delete", "events.events.k8s.io", "-n", test_ns],
        vec!["create", "clusterrolebindings"],
        vec!["escalate", "clusterroles"],
        vec!["impersonate", "serviceaccounts"],
    ];
    for check in &denied {
        assert!(
            !can_i(&sa, check).await,
            "the operator must not be able to {check:?}"
        );
    }
    let allowed: Vec<Vec<&str>> = vec![
        vec!["patch", &own_mwc],
        vec!["get", &own_secret, "-n", release_ns],
        vec!["update", &own_secret, "-n", release_ns],
        vec!["patch", &lease, "-n", release_ns],
        vec![
            "patch",
            "mlflowworkspacebindings.mlflow-operator.io",
            "--subresource=status",
            "-n",
            test_ns,
        ],
        vec!["watch", "serviceaccounts", "--all-namespaces"],
    ];
    for check in &allowed {
        assert!(
            can_i(&sa, check).await,
            "the operator must be able to {check:?}"
        );
    }
}

/// `kubectl auth can-i` as the ServiceAccount: true for "yes".
async fn can_i(sa: &str, args: &[&str]) -> bool {
    let out = tokio::process::Command::new("kubectl")
        .args(["auth", "can-i", &format!("--as={sa}")])
        .args(args)
        .output()
        .await
        .expect("kubectl on PATH");
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        answer == "yes" || answer == "no",
        "kubectl auth can-i {args:?}: {answer} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    answer == "yes"
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
