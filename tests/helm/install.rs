//! The chart installed on the live API server runs the operator: ready with a self-managed
//! certificate, the controller resolving a binding, the webhook injecting a pod, with least
//! privilege, and uninstalled cleanly.

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::Api;
use kube::api::PostParams;
use mlflow_operator::binding::MlflowWorkspaceBinding;
use serde_json::json;

use super::TRACK;
use super::common::helm::helm_ok;
use super::common::webhook::env_value;
use super::common::{eventually, eventually_ok, wait_for, with_temp_ns};
use super::privileges::assert_least_privilege;
use super::release::Installed;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn installed_chart_runs_the_operator_with_least_privilege() {
    with_temp_ns("helm", |client, test_ns| async move {
        let mut installed = Installed::new(&client, &test_ns).await;
        assert_ready_with_ca_bundle(&installed).await;
        assert_controller_resolves_a_binding(&installed).await;
        assert_webhook_injects_a_pod(&installed).await;
        assert_least_privilege(&installed).await;
        assert_uninstall_removes_everything(&mut installed).await;
    })
    .await;
}

/// Ready: certificate generated and stored (Secret RBAC), caches synced (list/watch RBAC); the
/// caBundle is the CA of the Secret (MWC get/patch on its own name).
async fn assert_ready_with_ca_bundle(installed: &Installed) {
    let http = super::common::http_client();
    let readyz = format!("http://127.0.0.1:{}/readyz", installed.metrics_port);
    eventually("/readyz to answer 200", WAIT, || async {
        let r = http.get(&readyz).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;

    let secrets: Api<Secret> = Api::namespaced(installed.client.clone(), &installed.release_ns);
    let secret = secrets
        .get(installed.flag("--cert-secret"))
        .await
        .expect("the certificate Secret");
    let ca = secret.data.unwrap()["ca.crt"].0.clone();
    let mwcs: Api<MutatingWebhookConfiguration> = Api::all(installed.client.clone());
    wait_for(
        &mwcs,
        &installed.fullname,
        "the caBundle to be set",
        Duration::from_secs(30),
        |mwc: Option<&MutatingWebhookConfiguration>| {
            let bundle = mwc.and_then(|m| m.webhooks.as_ref()?[0].client_config.ca_bundle.as_ref());
            bundle.is_some_and(|b| b.0 == ca)
        },
    )
    .await;
}

/// Controller: a trackingUri binding becomes Ready (Lease, watch, status patch) and an Event is
/// recorded for it (events RBAC).
async fn assert_controller_resolves_a_binding(installed: &Installed) {
    let client = &installed.client;
    let bindings: Api<MlflowWorkspaceBinding> = Api::namespaced(client.clone(), &installed.test_ns);
    let binding: MlflowWorkspaceBinding = serde_json::from_value(json!({
        "apiVersion": "mlflow-operator.io/v1alpha1",
        "kind": "MlflowWorkspaceBinding",
        "metadata": {"name": "team"},
        "spec": {"trackingUri": "https://mlflow.example.com", "experimentName": "helm"}
    }))
    .unwrap();
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .expect("create binding");
    let ready = |b: Option<&MlflowWorkspaceBinding>| b.is_some_and(|b| b.is_ready());
    wait_for(
        &bindings,
        "team",
        "the binding to become Ready",
        WAIT,
        ready,
    )
    .await;
    let events: Api<Event> = Api::namespaced(client.clone(), &installed.test_ns);
    eventually(
        "an Event on the binding",
        Duration::from_secs(30),
        || async {
            let list = events.list(&Default::default()).await.ok()?;
            let about_team =
                |e: &Event| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("team");
            list.items.iter().any(about_team).then_some(())
        },
    )
    .await;
}

/// Webhook: a labelled pod is injected through the API server.
async fn assert_webhook_injects_a_pod(installed: &Installed) {
    let pods: Api<Pod> = Api::namespaced(installed.client.clone(), &installed.test_ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "train", "labels": {TRACK: "true"}},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]}
    }))
    .unwrap();
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    // Retried: the API server learns of the caBundle with a lag.
    eventually_ok("the webhook to inject a dry-run pod", WAIT, || async {
        let p = pods.create(&dry, &pod).await.map_err(|e| e.to_string())?;
        match env_value(&p, "main", "MLFLOW_TRACKING_URI") {
            Some(_) => Ok(()),
            None => Err("a pod without MLFLOW_TRACKING_URI".to_string()),
        }
    })
    .await;
    let created = pods
        .create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    assert_eq!(
        env_value(&created, "main", "MLFLOW_TRACKING_URI").as_deref(),
        Some("https://mlflow.example.com")
    );
    assert_eq!(
        env_value(&created, "main", "MLFLOW_EXPERIMENT_NAME").as_deref(),
        Some("helm")
    );
    let annotations = created.metadata.annotations.unwrap_or_default();
    let injected = annotations.get("mlflow-operator.io/injected");
    assert!(
        injected.is_some_and(|a| a.starts_with("team/")),
        "{injected:?}"
    );
}

/// Uninstalling removes the cluster-scoped objects too.
async fn assert_uninstall_removes_everything(installed: &mut Installed) {
    drop(installed.operator.take());
    let ns = installed.release_ns.as_str();
    helm_ok(&["uninstall", "mlflow-operator", "-n", ns, "--wait"]).await;
    let mwcs: Api<MutatingWebhookConfiguration> = Api::all(installed.client.clone());
    assert!(mwcs.get_opt(&installed.fullname).await.unwrap().is_none());
    let crs: Api<ClusterRole> = Api::all(installed.client.clone());
    assert!(crs.get_opt(&installed.fullname).await.unwrap().is_none());
}
