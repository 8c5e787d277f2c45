//! The webhook against the real API server: it accepts, mutates or rejects what the contract
//! (SPEC §4) says, with the chart's webhook settings (SPEC §6).

use mlflow_operator_test_support as common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::node::pods_when;
use common::webhook::{TestWebhook, env_of, env_value, ready_binding, set_status};
use common::{eventually, with_temp_ns};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use mlflow_operator::inject::Defaults;
use serde_json::{Value, json};

const URI: &str = "http://mlflow.mlflow.svc:5000";
const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
const TENANT_ID: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";

fn pod(name: &str, labels: Value, annotations: Value, spec: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": spec
    }))
    .unwrap()
}

fn tracked() -> Value {
    json!({"mlflow-operator.io/track": "true"})
}

fn one_container() -> Value {
    json!({"containers": [{"name": "train", "image": "python:3.11"}]})
}

async fn create(client: &Client, ns: &str, p: &Pod) -> Result<Pod, kube::Error> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), p)
        .await
}

fn refusal_message(err: kube::Error) -> String {
    match err {
        kube::Error::Api(e) => e.message,
        other => panic!("expected an API refusal, got {other}"),
    }
}

/// Creates binding "b" with `spec`, Ready with URI, and waits until the webhook sees it.
async fn bind(client: &Client, wh: &TestWebhook, spec: Value) {
    ready_binding(client, &wh.namespace, "b", spec, URI).await;
    wh.wait_binding_ready("b").await;
}

/// Runs `test` with a webhook as `with_webhook` gives it and a Ready binding `b` of `spec`.
async fn with_binding(prefix: &str, spec: Value, test: impl AsyncFnOnce(&Client, &TestWebhook)) {
    with_webhook(prefix, async |client, wh| {
        bind(client, wh, spec).await;
        test(client, wh).await;
    })
    .await;
}

/// Runs `test` with a webhook registered for a fresh namespace (`wh.namespace`), effective
/// (the API server calls it), and stopped afterwards.
async fn with_webhook(prefix: &str, test: impl AsyncFnOnce(&Client, &TestWebhook)) {
    with_temp_ns(prefix, |client, ns| async move {
        let wh = TestWebhook::start(&client, &ns, Defaults::default()).await;
        wh.wait_effective().await;
        test(&client, &wh).await;
        wh.stop().await;
    })
    .await;
}

#[tokio::test]
async fn accepts_and_injects_a_labelled_pod() {
    with_webhook("wh-inject", async |client, wh| {
        let ns = &wh.namespace;
        let b = ready_binding(
            client,
            ns,
            "fraud",
            json!({"trackingUri": URI, "experimentName": "fraud-detection"}),
            URI,
        )
        .await;
        wh.wait_binding_ready("fraud").await;
        let p = create(client, ns, &pod("p", tracked(), json!({}), one_container()))
            .await
            .unwrap();
        assert_eq!(
            env_value(&p, "train", "MLFLOW_TRACKING_URI").as_deref(),
            Some(URI)
        );
        assert_eq!(
            env_value(&p, "train", "MLFLOW_EXPERIMENT_NAME").as_deref(),
            Some("fraud-detection")
        );
        let generation = b.metadata.generation.unwrap();
        assert_eq!(
            p.metadata
                .annotations
                .unwrap()
                .get("mlflow-operator.io/injected")
                .cloned(),
            Some(format!("fraud/{generation}"))
        );
    })
    .await;
}

#[tokio::test]
async fn unlabelled_pod_is_untouched_and_the_webhook_is_not_called() {
    with_binding(
        "wh-unlabelled",
        json!({"trackingUri": URI}),
        async |client, wh| {
            let ns = &wh.namespace;
            let before = common::webhook::admissions_total(&wh.metrics);
            let p = create(
                client,
                ns,
                &pod("p", json!({"app": "x"}), json!({}), one_container()),
            )
            .await
            .unwrap();
            assert!(env_of(&p, "train").is_empty());
            assert!(
                !p.metadata
                    .annotations
                    .unwrap_or_default()
                    .contains_key("mlflow-operator.io/injected")
            );
            assert_eq!(
                common::webhook::admissions_total(&wh.metrics),
                before,
                "the objectSelector keeps the webhook out"
            );
        },
    )
    .await;
}

#[tokio::test]
async fn pods_of_a_labelled_deployment_and_job_made_by_the_controller_manager_are_injected() {
    with_binding(
        "wh-workloads",
        json!({"trackingUri": URI, "experimentName": "e"}),
        async |client, wh| {
            let ns = &wh.namespace;
            let d = common::deployment("train", 2, tracked(), one_container());
            Api::<Deployment>::namespaced(client.clone(), ns)
                .create(&PostParams::default(), &d)
                .await
                .unwrap();
            Api::<Job>::namespaced(client.clone(), ns)
                .create(&PostParams::default(), &job("batch", 2))
                .await
                .unwrap();
            let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
            let minute = Duration::from_secs(60);
            let from_replica_set = pods_when(
                &pods,
                "app=train",
                "2 pods from the ReplicaSet",
                minute,
                |ps| ps.len() == 2,
            );
            let from_job = pods_when(
                &pods,
                "batch.kubernetes.io/job-name=batch",
                "2 pods from the Job",
                minute,
                |ps| ps.len() == 2,
            );
            let (a, b) = tokio::join!(from_replica_set, from_job);
            for p in a.into_iter().chain(b) {
                assert_eq!(
                    env_value(&p, "train", "MLFLOW_TRACKING_URI").as_deref(),
                    Some(URI)
                );
                assert_eq!(
                    env_value(&p, "train", "MLFLOW_EXPERIMENT_NAME").as_deref(),
                    Some("e")
                );
            }
        },
    )
    .await;
}

/// A labelled Job running `parallelism` pods of [`one_container`] at once.
fn job(name: &str, parallelism: i32) -> Job {
    let mut spec = one_container();
    spec["restartPolicy"] = json!("Never");
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "parallelism": parallelism,
            "completions": parallelism,
            "template": {"metadata": {"labels": tracked()}, "spec": spec},
        },
    }))
    .expect("a valid Job")
}

#[tokio::test]
async fn workload_identity_comes_from_service_account_annotations_and_is_refused_without_a_client_id()
 {
    with_webhook("wh-wi", async |client, wh| {
        let ns = &wh.namespace;
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
        let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "trainer", "annotations": {
            "azure.workload.identity/client-id": CLIENT_ID, "azure.workload.identity/tenant-id": TENANT_ID}}}))
        .unwrap();
        sas.create(&PostParams::default(), &sa).await.unwrap();
        bind(client, wh, json!({"trackingUri": URI, "identity": {"workloadIdentity": {"tokenExpirationSeconds": 7200}}})).await;

        let spec = json!({"serviceAccountName": "trainer", "containers": [{"name": "train", "image": "x"}]});
        let p = create(client, ns, &pod("ok", tracked(), json!({}), spec)).await.unwrap();
        assert_eq!(env_value(&p, "train", "AZURE_CLIENT_ID").as_deref(), Some(CLIENT_ID));
        assert_eq!(env_value(&p, "train", "AZURE_TENANT_ID").as_deref(), Some(TENANT_ID));
        assert_eq!(
            env_value(&p, "train", "AZURE_FEDERATED_TOKEN_FILE").as_deref(),
            Some("/var/run/secrets/mlflow-operator/azure/azure-identity-token")
        );
        assert_eq!(env_value(&p, "train", "AZURE_AUTHORITY_HOST").as_deref(), Some("https://login.microsoftonline.com/"));
        let spec_v = serde_json::to_value(p.spec.as_ref().unwrap()).unwrap();
        let vol = spec_v["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "mlflow-operator-azure-token").unwrap();
        let sat = &vol["projected"]["sources"][0]["serviceAccountToken"];
        assert_eq!(sat["audience"], "api://AzureADTokenExchange");
        assert_eq!(sat["expirationSeconds"], 7200);
        let mount = spec_v["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "mlflow-operator-azure-token")
            .unwrap()
            .clone();
        assert_eq!(mount["mountPath"], "/var/run/secrets/mlflow-operator/azure");
        assert_eq!(mount["readOnly"], true);

        // The default ServiceAccount has no client-id annotation: refused, saying where to set it.
        let err = create(client, ns, &pod("no-id", tracked(), json!({}), one_container())).await.unwrap_err();
        let msg = refusal_message(err);
        assert!(msg.contains("azure.workload.identity/client-id"), "{msg}");
        assert!(msg.contains("clientId"), "{msg}");
    })
    .await;
}

#[tokio::test]
async fn managed_identity_injects_only_the_client_id() {
    with_binding(
        "wh-mi",
        json!({"trackingUri": URI, "identity": {"managedIdentity": {"clientId": CLIENT_ID}}}),
        async |client, wh| {
            let ns = &wh.namespace;
            let p = create(client, ns, &pod("p", tracked(), json!({}), one_container()))
                .await
                .unwrap();
            let env = env_of(&p, "train");
            assert_eq!(
                env_value(&p, "train", "AZURE_CLIENT_ID").as_deref(),
                Some(CLIENT_ID)
            );
            for absent in [
                "AZURE_FEDERATED_TOKEN_FILE",
                "MSI_ENDPOINT",
                "IDENTITY_ENDPOINT",
                "AZURE_TENANT_ID",
            ] {
                assert!(
                    !env.contains_key(absent),
                    "{absent} must not be injected: {env:?}"
                );
            }
            let vols = p.spec.unwrap().volumes.unwrap_or_default();
            assert!(
                !vols.iter().any(|v| v.name.starts_with("mlflow-operator-")),
                "{vols:?}"
            );
        },
    )
    .await;
}

#[tokio::test]
async fn azure_workload_identity_pods_get_mlflow_settings_but_no_identity_from_us() {
    with_binding("wh-azwi", json!({"trackingUri": URI, "identity": {"workloadIdentity": {"clientId": CLIENT_ID, "tenantId": TENANT_ID}}}), async |client, wh| {
        let ns = &wh.namespace;
        let labels = json!({"mlflow-operator.io/track": "true", "azure.workload.identity/use": "true"});
        let p = create(client, ns, &pod("p", labels, json!({}), one_container())).await.unwrap();
        let env = env_of(&p, "train");
        assert_eq!(env_value(&p, "train", "MLFLOW_TRACKING_URI").as_deref(), Some(URI));
        assert!(!env.contains_key("AZURE_CLIENT_ID") && !env.contains_key("AZURE_FEDERATED_TOKEN_FILE"), "{env:?}");
        let ann = p.metadata.annotations.unwrap()["mlflow-operator.io/injected"].clone();
        assert!(ann.contains("azure-workload-identity"), "{ann}");
    })
    .await;
}

#[tokio::test]
async fn user_env_is_preserved_and_a_self_configured_container_gets_no_mlflow_variables() {
    with_binding("wh-userenv", json!({"trackingUri": URI, "experimentName": "from-binding"}), async |client, wh| {
        let ns = &wh.namespace;
        let spec = json!({"containers": [
            {"name": "train", "image": "x", "env": [
                {"name": "MLFLOW_EXPERIMENT_NAME", "value": "mine"},
                {"name": "OTHER", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
            ]},
            {"name": "own", "image": "x", "env": [{"name": "MLFLOW_TRACKING_URI", "value": "http://elsewhere:5000"}]}
        ]});
        let p = create(client, ns, &pod("p", tracked(), json!({}), spec)).await.unwrap();
        assert_eq!(env_value(&p, "train", "MLFLOW_EXPERIMENT_NAME").as_deref(), Some("mine"));
        assert_eq!(env_value(&p, "train", "MLFLOW_TRACKING_URI").as_deref(), Some(URI));
        assert_eq!(env_of(&p, "train")["OTHER"]["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");
        assert_eq!(env_value(&p, "own", "MLFLOW_TRACKING_URI").as_deref(), Some("http://elsewhere:5000"));
        assert!(!env_of(&p, "own").contains_key("MLFLOW_EXPERIMENT_NAME"));
    })
    .await;
}

#[tokio::test]
async fn rejects_ambiguous_missing_and_not_ready_bindings_with_their_messages() {
    with_webhook("wh-refuse", async |client, wh| {
        let ns = &wh.namespace;
        // No binding at all.
        let msg = refusal_message(
            create(
                client,
                ns,
                &pod("p0", tracked(), json!({}), one_container()),
            )
            .await
            .unwrap_err(),
        );
        assert!(msg.contains(ns.as_str()), "names the namespace: {msg}");

        ready_binding(client, ns, "alpha", json!({"trackingUri": URI}), URI).await;
        ready_binding(client, ns, "beta", json!({"trackingUri": URI}), URI).await;
        wh.wait_binding_ready("alpha").await;
        wh.wait_binding_ready("beta").await;
        let msg = refusal_message(
            create(
                client,
                ns,
                &pod("p1", tracked(), json!({}), one_container()),
            )
            .await
            .unwrap_err(),
        );
        assert!(
            msg.contains("alpha") && msg.contains("beta"),
            "names the candidates: {msg}"
        );
        assert!(
            msg.contains("mlflow-operator.io/binding"),
            "names the fix: {msg}"
        );

        // Naming one resolves the ambiguity; naming a missing one is refused.
        let named = create(
            client,
            ns,
            &pod(
                "p2",
                tracked(),
                json!({"mlflow-operator.io/binding": "beta"}),
                one_container(),
            ),
        )
        .await
        .unwrap();
        assert!(
            named.metadata.annotations.unwrap()["mlflow-operator.io/injected"].starts_with("beta/")
        );
        let msg = refusal_message(
            create(
                client,
                ns,
                &pod(
                    "p3",
                    tracked(),
                    json!({"mlflow-operator.io/binding": "gamma"}),
                    one_container(),
                ),
            )
            .await
            .unwrap_err(),
        );
        assert!(msg.contains("gamma"), "{msg}");

        // A binding that is not Ready.
        set_status(
            client,
            ns,
            "beta",
            1,
            None,
            ("False", "WorkspaceNotFound", "workspace ws not found"),
        )
        .await;
        eventually(
            "beta not Ready in the cache",
            Duration::from_secs(30),
            || async {
                wh.bindings
                    .get(ns, "beta")
                    .filter(|b| !b.is_ready())
                    .map(|_| ())
            },
        )
        .await;
        let msg = refusal_message(
            create(
                client,
                ns,
                &pod(
                    "p4",
                    tracked(),
                    json!({"mlflow-operator.io/binding": "beta"}),
                    one_container(),
                ),
            )
            .await
            .unwrap_err(),
        );
        assert!(msg.contains("beta") && msg.contains("not Ready"), "{msg}");
    })
    .await;
}

#[tokio::test]
async fn a_binding_in_another_namespace_is_never_applied() {
    with_temp_ns("wh-other", |client, other| async move {
        with_webhook("wh-mine", async |_, wh| {
            let ns = &wh.namespace;
            let b = json!({"trackingUri": URI});
            ready_binding(&client, &other, "elsewhere", b, URI).await;
            wh.wait_binding_ready_in(&other, "elsewhere").await;
            let p = pod("p", tracked(), json!({}), one_container());
            let msg = refusal_message(create(&client, ns, &p).await.unwrap_err());
            assert!(
                !msg.contains("elsewhere"),
                "another namespace's binding is not even a candidate: {msg}"
            );
        })
        .await;
    })
    .await;
}

/// A pod that names another namespace's binding by its annotation (plainly, or as
/// `namespace/name`) is refused as naming a missing binding, even when its own namespace has a
/// Ready binding; it never gets the other binding's values. A ServiceAccount of the same name in
/// the other namespace lends no workload-identity annotations either.
#[tokio::test]
async fn a_pod_naming_another_namespaces_binding_is_refused_and_never_gets_its_values() {
    with_temp_ns("wh-theirs", |client, theirs| async move {
        with_webhook("wh-ours", async |_, wh| {
            let ours = &wh.namespace;
            let their_uri = "https://theirs.example.invalid/mlflow";
            let their_spec = json!({
                "trackingUri": their_uri,
                "experimentName": "their-experiment",
                "identity": {"workloadIdentity": {"clientId": CLIENT_ID, "tenantId": TENANT_ID}},
            });
            ready_binding(&client, &theirs, "theirs", their_spec, their_uri).await;
            wh.wait_binding_ready_in(&theirs, "theirs").await;
            for name in ["theirs".to_string(), format!("{theirs}/theirs")] {
                let annotations = json!({"mlflow-operator.io/binding": name});
                let p = pod("p", tracked(), annotations, one_container());
                let msg = refusal_message(create(&client, ours, &p).await.unwrap_err());
                assert!(
                    msg.contains(&format!("namespace \"{ours}\" has no binding of that name")),
                    "{name}: {msg}"
                );
                assert!(
                    !msg.contains(their_uri) && !msg.contains(CLIENT_ID),
                    "{msg}"
                );
            }

            // With a Ready binding of our own (workload identity, client id from the pod's
            // ServiceAccount), naming theirs still refuses rather than falling back to ours.
            let sa = |ns: &str, client_id: &str| -> ServiceAccount {
                serde_json::from_value(json!({"metadata": {"name": "trainer", "namespace": ns,
                    "annotations": {"azure.workload.identity/client-id": client_id}}}))
                .unwrap()
            };
            Api::<ServiceAccount>::namespaced(client.clone(), &theirs)
                .create(&PostParams::default(), &sa(&theirs, CLIENT_ID))
                .await
                .unwrap();
            // Ours exists (ServiceAccount admission requires it) but names no client id.
            let mut own = sa(ours, CLIENT_ID);
            own.metadata.annotations = None;
            Api::<ServiceAccount>::namespaced(client.clone(), ours)
                .create(&PostParams::default(), &own)
                .await
                .unwrap();
            bind(&client, wh, json!({"trackingUri": URI, "identity": {"workloadIdentity": {"tenantId": TENANT_ID}}})).await;
            let annotated = pod(
                "named",
                tracked(),
                json!({"mlflow-operator.io/binding": "theirs"}),
                json!({"serviceAccountName": "trainer", "containers": [{"name": "train", "image": "python:3.11"}]}),
            );
            let msg = refusal_message(create(&client, ours, &annotated).await.unwrap_err());
            assert!(msg.contains("has no binding of that name"), "{msg}");
            // Our binding applies, but the other namespace's `trainer` lends no client id.
            let plain = pod(
                "plain",
                tracked(),
                json!({}),
                json!({"serviceAccountName": "trainer", "containers": [{"name": "train", "image": "python:3.11"}]}),
            );
            let msg = refusal_message(create(&client, ours, &plain).await.unwrap_err());
            assert!(msg.contains("client id") && !msg.contains(CLIENT_ID), "{msg}");
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn a_native_sidecar_is_preserved_and_injected() {
    with_binding(
        "wh-sidecar",
        json!({"trackingUri": URI}),
        async |client, wh| {
            let ns = &wh.namespace;
            let spec = json!({
                "initContainers": [{"name": "logshipper", "image": "x", "restartPolicy": "Always"}],
                "containers": [{"name": "train", "image": "x"}]
            });
            let p = create(client, ns, &pod("p", tracked(), json!({}), spec))
                .await
                .unwrap();
            let init = &p.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0];
            assert_eq!(init.restart_policy.as_deref(), Some("Always"));
            assert_eq!(
                env_value(&p, "logshipper", "MLFLOW_TRACKING_URI").as_deref(),
                Some(URI)
            );
        },
    )
    .await;
}

#[tokio::test]
async fn a_sidecar_added_by_a_later_webhook_gets_the_env_through_reinvocation_without_duplicates() {
    with_binding(
        "wh-reinvoke",
        json!({"trackingUri": URI, "experimentName": "e"}),
        async |client, wh| {
            let ns = &wh.namespace;
            let sidecar = common::sidecar_webhook::SidecarWebhook::start(client, ns).await;
            sidecar.wait_effective(client, ns).await;
            let p = create(client, ns, &pod("p", tracked(), json!({}), one_container()))
                .await
                .unwrap();
            let names: Vec<_> = p
                .spec
                .as_ref()
                .unwrap()
                .containers
                .iter()
                .map(|c| c.name.clone())
                .collect();
            assert_eq!(names, ["train", "added-sidecar"]);
            for c in ["train", "added-sidecar"] {
                let env: Vec<_> = p
                    .spec
                    .as_ref()
                    .unwrap()
                    .containers
                    .iter()
                    .find(|x| x.name == c)
                    .unwrap()
                    .env
                    .clone()
                    .unwrap_or_default();
                let count = env
                    .iter()
                    .filter(|e| e.name == "MLFLOW_TRACKING_URI")
                    .count();
                assert_eq!(
                    count, 1,
                    "{c} has MLFLOW_TRACKING_URI exactly once: {env:?}"
                );
            }
            sidecar.stop(client).await;
        },
    )
    .await;
}

#[tokio::test]
async fn kubectl_server_side_dry_run_shows_the_mutation_and_creates_nothing() {
    with_binding(
        "wh-dryrun",
        json!({"trackingUri": URI}),
        async |client, wh| {
            let ns = &wh.namespace;
            let manifest = serde_json::to_string(&json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "dry", "namespace": ns, "labels": tracked()},
                "spec": one_container()
            }))
            .unwrap();
            let out = common::kubectl(
                &["create", "--dry-run=server", "-o", "json", "-f", "-"],
                &manifest,
            )
            .await;
            let shown: Value = serde_json::from_str(&out).unwrap();
            let env = &shown["spec"]["containers"][0]["env"];
            assert!(
                env.as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["name"] == "MLFLOW_TRACKING_URI" && e["value"] == URI),
                "{env}"
            );
            assert!(
                Api::<Pod>::namespaced(client.clone(), ns)
                    .get_opt("dry")
                    .await
                    .unwrap()
                    .is_none()
            );
        },
    )
    .await;
}

#[tokio::test]
async fn refusals_leave_one_warning_event_on_the_binding_and_dry_runs_leave_none() {
    with_webhook("wh-events", async |client, wh| {
        let ns = &wh.namespace;
        for name in ["quiet", "loud", "marker"] {
            ready_binding(client, ns, name, json!({"trackingUri": URI}), URI).await;
            set_status(
                client,
                ns,
                name,
                1,
                None,
                ("False", "Forbidden", "no access"),
            )
            .await;
            wh.wait_binding_seen(name).await;
        }
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        let named = |b: &str, n: &str| {
            pod(
                n,
                tracked(),
                json!({"mlflow-operator.io/binding": b}),
                one_container(),
            )
        };
        let dry = PostParams {
            dry_run: true,
            ..Default::default()
        };
        assert!(pods.create(&dry, &named("quiet", "d1")).await.is_err());
        for i in 0..3 {
            assert!(
                pods.create(&PostParams::default(), &named("loud", &format!("p{i}")))
                    .await
                    .is_err()
            );
        }
        // Refused after the three: once its Event is in, the Events of the three were decided
        // (the throttle decides before the answer) and posted before it was.
        let marker = named("marker", "m0");
        assert!(pods.create(&PostParams::default(), &marker).await.is_err());
        let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
        let about = |list: &[k8s_openapi::api::events::v1::Event], b: &str| {
            list.iter()
                .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(b))
                .filter(|e| e.reason.as_deref() == Some("PodRefused"))
                .cloned()
                .collect::<Vec<_>>()
        };
        let loud = eventually(
            "PodRefused events on bindings loud and marker",
            Duration::from_secs(30),
            || async {
                let l = events.list(&ListParams::default()).await.ok()?.items;
                let found = !about(&l, "loud").is_empty() && !about(&l, "marker").is_empty();
                found.then_some(l)
            },
        )
        .await;
        let on_loud = about(&loud, "loud");
        assert_eq!(on_loud.len(), 1, "rate-limited to one event: {on_loud:?}");
        assert_eq!(on_loud[0].type_.as_deref(), Some("Warning"));
        assert!(
            on_loud[0]
                .note
                .as_deref()
                .unwrap_or_default()
                .contains("not Ready")
        );
        assert!(
            about(&loud, "quiet").is_empty(),
            "a dry run has no side effects"
        );
    })
    .await;
}

/// A client of the test cluster that counts the ServiceAccount requests it sends.
async fn counting_client() -> (Client, Arc<AtomicUsize>) {
    let reads = Arc::new(AtomicUsize::new(0));
    let seen = reads.clone();
    let count = tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
        if req.uri().path().contains("/serviceaccounts/") {
            seen.fetch_add(1, Ordering::SeqCst);
        }
        req
    });
    let config = kube::Config::infer().await.unwrap();
    let client = kube::client::ClientBuilder::try_from(config)
        .unwrap()
        .with_layer(&count)
        .build();
    (client, reads)
}

#[tokio::test]
async fn a_service_account_missing_from_the_cache_is_read_once_from_the_api_server() {
    with_temp_ns("wh-sa-miss", |client, ns| async move {
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
        let sa: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": "fresh", "annotations": {
            "azure.workload.identity/client-id": CLIENT_ID}}}))
            .unwrap();
        sas.create(&PostParams::default(), &sa).await.unwrap();
        // A cache that has not seen it (as right after the ServiceAccount was created), over a
        // client that counts the ServiceAccount requests it sends.
        let (cache, _writer) = kube::runtime::reflector::store::<ServiceAccount>();
        let (counting, reads) = counting_client().await;
        let lookup = mlflow_operator::webhook::ServiceAccounts {
            cache,
            client: Some(counting),
        };
        let got = lookup.get(&ns, "fresh").await.expect("found by a live GET");
        assert_eq!(
            got.metadata.annotations.as_ref().unwrap()["azure.workload.identity/client-id"],
            CLIENT_ID
        );
        assert_eq!(reads.load(Ordering::SeqCst), 1, "one GET for a miss");
        assert!(lookup.get(&ns, "absent").await.is_none());
        assert_eq!(
            reads.load(Ordering::SeqCst),
            2,
            "one GET for an absent one, no retry"
        );
    })
    .await;
}

#[tokio::test]
async fn rejects_an_azureml_pod_without_any_credential_and_accepts_it_once_identity_is_set() {
    with_webhook("wh-nocred", async |client, wh| {
        let ns = &wh.namespace;
        let azureml = "azureml://westeurope.api.azureml.ms/mlflow/v1.0/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws";
        ready_binding(client, ns, "b", json!({"trackingUri": azureml}), azureml).await;
        wh.wait_binding_ready("b").await;
        // No identity anywhere: the Azure ML client would sit in a device-code login for 15 minutes.
        let err = create(client, ns, &pod("stuck", tracked(), json!({}), one_container())).await.unwrap_err();
        let msg = refusal_message(err);
        assert!(msg.contains("no Azure identity") && msg.contains("spec.identity"), "{msg}");
        assert!(msg.contains("container \"train\""), "{msg}");
        // A container that brings its own credential is admitted, with the cloud of the URI.
        let own = json!({"containers": [{"name": "train", "image": "x", "env": [
            {"name": "AZURE_CLIENT_SECRET", "valueFrom": {"secretKeyRef": {"name": "sp", "key": "secret"}}}]}]});
        let p = create(client, ns, &pod("own", tracked(), json!({}), own)).await.unwrap();
        assert_eq!(env_value(&p, "train", "MLFLOW_TRACKING_URI").as_deref(), Some(azureml));
        assert_eq!(env_value(&p, "train", "AZUREML_CURRENT_CLOUD").as_deref(), Some("AzureCloud"));
    })
    .await;
}
