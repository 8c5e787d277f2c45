//! The binding controller against the real local control plane, with fake Entra ID and ARM.
//!
//! Each test runs its own in-process controller (scoped to the test's namespace, with its own
//! Lease) against its own fakes.

use mlflow_operator_test_support as common;

use std::time::{Duration, Instant};

use common::fake_azure::{FakeAzure, Identity, Reply, TOKEN_EXCHANGE_AUDIENCE};
use common::{events_for, eventually, wait_for, with_temp_ns};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use mlflow_operator::binding::MlflowWorkspaceBinding;
use mlflow_operator::binding_store::BindingStore;
use mlflow_operator::controller::arm::{AzureConfig, RetryPolicy};
use mlflow_operator::controller::credential::AzureEnv;
use mlflow_operator::controller::{self, Config};
use mlflow_operator::metrics::{Metrics, ReadyLabels};
use serde_json::json;
use tokio::sync::{oneshot, watch};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT: &str = "11111111-2222-3333-4444-555555555555";
const SUB: &str = "00000000-0000-0000-0000-000000000001";
const WAIT: Duration = Duration::from_secs(60);

/// A controller running in this process.
struct Operator {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    leader: watch::Receiver<bool>,
    metrics: Metrics,
    /// The binding store's watch: aborted when dropped.
    _watch: AbortOnDrop,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Operator {
    fn start(client: &Client, cfg: Config) -> Self {
        let metrics = Metrics::new();
        let (stop, stopped) = oneshot::channel::<()>();
        let (leader_tx, leader) = watch::channel(false);
        // As `run` does: the process's one binding store, filled by its own watch.
        let (bindings, watch) = BindingStore::new(client);
        let watch = AbortOnDrop(tokio::spawn(watch));
        let task = tokio::spawn(controller::run(
            client.clone(),
            cfg,
            metrics.clone(),
            bindings,
            async move {
                let _ = stopped.await;
            },
            leader_tx,
        ));
        Self {
            stop: Some(stop),
            task,
            leader,
            metrics,
            _watch: watch,
        }
    }

    fn reconciles(&self) -> u64 {
        self.metrics.reconciles.get()
    }

    fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    fn ready_gauge(&self, ready: &str) -> i64 {
        self.metrics
            .bindings
            .get_or_create(&ReadyLabels {
                ready: ready.to_string(),
            })
            .get()
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(WAIT, &mut self.task)
            .await
            .expect("the controller stops on shutdown")
            .unwrap()
            .expect("the controller ends cleanly");
    }
}

fn config(ns: &str, lease: &str, fake: Option<&FakeAzure>, env: AzureEnv) -> Config {
    Config {
        namespace: ns.to_string(),
        identity: format!("{lease}-{}", common::random_suffix()),
        lease_name: lease.to_string(),
        lease_duration: Duration::from_secs(3),
        refresh_interval: Duration::from_secs(300),
        error_retry: Duration::from_secs(30),
        spec_change_window: Duration::from_secs(5),
        watch_namespace: Some(ns.to_string()),
        azure: AzureConfig {
            arm_endpoint: fake.map(|f| f.arm_url.clone()),
            authority_host: fake.map(|f| f.authority_url.clone()),
            ca_pem: fake.map(|f| f.ca_pem.clone().into_bytes()),
            env,
            retry: RetryPolicy {
                attempts: 4,
                base_delay: Duration::from_millis(100),
                max_delay: Duration::from_secs(2),
                request_timeout: Duration::from_secs(5),
            },
            imds_probe: Default::default(),
        },
        lease_owner: None,
    }
}

/// A real ServiceAccount token for the Azure token-exchange audience, in a temp file, and the
/// environment of the workload identity credential (AZURE_CLIENT_ID, AZURE_TENANT_ID,
/// AZURE_FEDERATED_TOKEN_FILE). Returns the env, the subject and the file's guard.
async fn workload_identity(
    client: &Client,
    ns: &str,
) -> (AzureEnv, String, tempfile::NamedTempFile) {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "mlflow-operator"}})).unwrap(),
    )
    .await
    .unwrap();
    let req: TokenRequest = serde_json::from_value(json!({
        "spec": {"audiences": [TOKEN_EXCHANGE_AUDIENCE], "expirationSeconds": 3600}
    }))
    .unwrap();
    let tr: TokenRequest = sas
        .create_subresource("token", "mlflow-operator", &PostParams::default(), &req)
        .await
        .unwrap();
    let token = tr.status.unwrap().token.expect("a token");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), token).unwrap();
    let env = AzureEnv {
        client_id: Some(CLIENT.into()),
        tenant_id: Some(TENANT.into()),
        federated_token_file: Some(file.path().to_path_buf()),
        client_secret: None,
        managed_identity_endpoint: None,
    };
    (
        env,
        format!("system:serviceaccount:{ns}:mlflow-operator"),
        file,
    )
}

async fn fake_for_workload_identity(client: &Client, subject: &str) -> FakeAzure {
    FakeAzure::start(
        client.clone(),
        Identity {
            tenant_id: TENANT.into(),
            client_id: CLIENT.into(),
            client_secret: None,
            federated_subject: Some(subject.to_string()),
        },
    )
    .await
}

fn tracking_uri_for(ws: &str) -> String {
    format!(
        "azureml://eastus.api.azureml.ms/mlflow/v1.0/subscriptions/{SUB}/resourceGroups/ml-rg/providers/Microsoft.MachineLearningServices/workspaces/{ws}"
    )
}

async fn create_azureml(api: &Api<MlflowWorkspaceBinding>, name: &str, ws: &str) {
    let b: MlflowWorkspaceBinding = serde_json::from_value(json!({
        "apiVersion": "mlflow-operator.io/v1alpha1",
        "kind": "MlflowWorkspaceBinding",
        "metadata": {"name": name},
        "spec": {"azureML": {"subscriptionId": SUB, "resourceGroup": "ml-rg", "workspaceName": ws},
                 "experimentName": "exp"}
    }))
    .unwrap();
    api.create(&PostParams::default(), &b).await.unwrap();
}

/// Waits until the binding's Ready condition has `status` (and `reason`), for its generation.
/// The service principal the fake Entra ID knows, and the operator's environment for it.
fn sp_identity() -> Identity {
    Identity {
        tenant_id: TENANT.into(),
        client_id: CLIENT.into(),
        client_secret: Some("s3cret".into()),
        federated_subject: None,
    }
}

fn sp_env() -> AzureEnv {
    AzureEnv {
        client_id: Some(CLIENT.into()),
        tenant_id: Some(TENANT.into()),
        client_secret: Some("s3cret".into()),
        ..Default::default()
    }
}

async fn wait_ready(
    api: &Api<MlflowWorkspaceBinding>,
    name: &str,
    status: &str,
    reason: &str,
) -> MlflowWorkspaceBinding {
    let what = format!("{name} Ready={status} reason {reason}");
    wait_for(
        api,
        name,
        &what,
        WAIT,
        |b: Option<&MlflowWorkspaceBinding>| {
            let Some((b, c)) = b.and_then(|b| Some((b, b.ready_condition()?))) else {
                return false;
            };
            let current =
                b.status.as_ref().and_then(|s| s.observed_generation) == b.metadata.generation;
            current && c.status == status && c.reason == reason
        },
    )
    .await
}

/// The binding once its status counts its pods (condition PodsCurrent).
async fn wait_counted(api: &Api<MlflowWorkspaceBinding>, name: &str) -> MlflowWorkspaceBinding {
    let counted = |b: Option<&MlflowWorkspaceBinding>| {
        b.and_then(|b| b.status.as_ref()?.pods_current()).is_some()
    };
    let what = format!("{name} with its pods counted");
    wait_for(api, name, &what, WAIT, counted).await
}

#[tokio::test]
async fn tracking_uri_binding_is_ready_at_once_without_any_azure_identity() {
    with_temp_ns("ctl-uri", |client, ns| async move {
        // No Azure environment at all: the operator still runs.
        let op = Operator::start(&client, config(&ns, "lease-uri", None, AzureEnv::default()));
        let api: Api<MlflowWorkspaceBinding> = Api::namespaced(client.clone(), &ns);
        let b: MlflowWorkspaceBinding = serde_json::from_value(json!({
            "apiVersion": "mlflow-operator.io/v1alpha1",
            "kind": "MlflowWorkspaceBinding",
            "metadata": {"name": "plain"},
            "spec": {"trackingUri": "https://mlflow.example.com",
                     "registryUri": "https://registry.example.com"}
        }))
        .unwrap();
        api.create(&PostParams::default(), &b).await.unwrap();
        let b = wait_ready(&api, "plain", "True", "Resolved").await;
        let s = b.status.as_ref().unwrap();
        assert_eq!(
            s.tracking_uri.as_deref(),
            Some("https://mlflow.example.com")
        );
        assert_eq!(
            s.registry_uri.as_deref(),
            Some("https://registry.example.com")
        );
        assert_eq!(s.observed_generation, b.metadata.generation);
        let c = b.ready_condition().unwrap();
        assert_eq!(c.observed_generation, b.metadata.generation);
        assert!(b.is_ready());
        // Written by our field manager, with server-side apply.
        let managers: Vec<_> = b
            .managed_fields()
            .iter()
            .filter(|m| m.subresource.as_deref() == Some("status"))
            .map(|m| (m.manager.clone(), m.operation.clone()))
            .collect();
        assert_eq!(
            managers,
            vec![(Some("mlflow-operator".into()), Some("Apply".into()))]
        );
        eventually("a Normal Resolved event", WAIT, || async {
            events_for(&client, &ns, "plain")
                .await
                .into_iter()
                .find(|e| {
                    e.reason.as_deref() == Some("Resolved") && e.type_.as_deref() == Some("Normal")
                })
        })
        .await;
        op.stop().await;
    })
    .await;
}

#[tokio::test]
async fn azureml_binding_resolves_through_workload_identity_and_arm() {
    with_temp_ns("ctl-wi", |client, ns| async move {
        let (env, subject, _token_file) = workload_identity(&client, &ns).await;
        let fake = fake_for_workload_identity(&client, &subject).await;
        fake.set_workspace(SUB, "ml-rg", "ws-wi", &tracking_uri_for("ws-wi"));
        let op = Operator::start(&client, config(&ns, "lease-wi", Some(&fake), env));
        let api: Api<MlflowWorkspaceBinding> = Api::namespaced(client.clone(), &ns);
        create_azureml(&api, "fraud", "ws-wi").await;
        let b = wait_ready(&api, "fraud", "True", "Resolved").await;
        assert_eq!(
            b.status.as_ref().unwrap().tracking_uri.as_deref(),
            Some(tracking_uri_for("ws-wi").as_str()),
            "token errors: {:?}",
            fake.token_errors()
        );
        assert!(fake.tokens_issued() >= 1);
        assert!(fake.token_errors().is_empty(), "{:?}", fake.token_errors());
        assert_eq!(fake.arm_calls("ws-wi"), 1);
        // The gauge is recounted at the end of the reconcile, after the status write.
        eventually("the binding counted Ready", WAIT, || async {
            (op.ready_gauge("True") == 1).then_some(())
        })
        .await;
        assert!(
            op.metrics
                .render()
                .contains("arm_request_duration_seconds_count{status=\"200\"} 1")
        );
        op.stop().await;
    })
    .await;
}

#[tokio::test]
async fn bindings_sharing_a_workspace_make_one_arm_call() {
    with_temp_ns("ctl-share", |client, ns| async move {
        let fake = FakeAzure::start(client.clone(), sp_identity()).await;
        fake.set_workspace(SUB, "ml-rg", "shared", &tracking_uri_for("shared"));
        // Slow ARM, so all three reconciles overlap the one in-flight call.
        fake.script("shared", [Reply::Delay(Duration::from_millis(500))]);
        let op = Operator::start(&client, config(&ns, "lease-share", Some(&fake), sp_env()));
        let api: Api<MlflowWorkspaceBinding> = Api::namespaced(client.clone(), &ns);
        for name in ["a", "b", "c"] {
            create_azureml(&api, name, "shared").await;
        }
        for name in ["a", "b", "c"] {
            let b = wait_ready(&api, name, "True", "Resolved").await;
            assert_eq!(
                b.status.unwrap().tracking_uri.as_deref(),
                Some(tracking_uri_for("shared").as_str())
            );
        }
        // Every binding was reconciled again after its own status write (6 reconciles at
        // least) and the gauge counts all three, and still one ARM call.
        eventually("the reconciles after the status writes", WAIT, || async {
            (op.reconciles() >= 6 && op.ready_gauge("True") == 3).then_some(())
        })
        .await;
        assert_eq!(fake.arm_calls("shared"), 1);
        // A deleted binding leaves the gauge when the watch sees it go, with no reconcile.
        api.delete("a", &Default::default()).await.unwrap();
        eventually("the deleted binding uncounted", WAIT, || async {
            (op.ready_gauge("True") == 2).then_some(())
        })
        .await;
        op.stop().await;
    })
    .await;
}

#[tokio::test]
async fn throttled_then_ok_ends_ready() {
    with_temp_ns("ctl-429", |client, ns| async move {
        let (env, subject, _token_file) = workload_identity(&client, &ns).await;
        let fake = fake_for_workload_identity(&client, &subject).await;
        fake.set_workspace(SUB, "ml-rg", "busy", &tracking_uri_for("busy"));
        fake.script(
            "busy",
            [
                Reply::Throttled {
                    retry_after_secs: 1,
                },
                Reply::ServerError,
            ],
        );
        let op = Operator::start(&client, config(&ns, "lease-429", Some(&fake), env));
        let api: Api<MlflowWorkspaceBinding> = Api::namespaced(client.clone(), &ns);
        let started = std::time::Instant::now();
        create_azureml(&api, "busy", "busy").await;
        let b = wait_ready(&api, "busy", "True", "Resolved").await;
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "Retry-After was honoured"
        );
        assert_eq!(
            b.status.unwrap().tracking_uri.as_deref(),
            Some(tracking_uri_for("busy").as_str())
        );
        assert_eq!(fake.arm_calls("busy"), 3, "429, 500, then 200");
        // Only the first reconcile could have seen a failure; none was reported.
        assert!(!op.metrics.render().contains("reconcile_errors_total{"));
        op.stop().await;
    })
    .await;
}

#[tokio::test]
async fn forbidden_and_not_found_say_what_to_fix() {
    with_temp_ns("ctl-403", |client, ns| async move {
        let (env, subject, _token_file) = workload_identity(&client, &ns).await;
        let fake = fake_for_workload_identity(&client, &subject).await;
        fake.set_workspace(SUB, "ml-rg", "locked", &tracking_uri_for("locked"));
        fake.always("locked", Some(Reply::Forbidden));
        let op = Operator::start(&client, config(&ns, "lease-403", Some(&fake), env));
        let api: Api<MlflowWorkspaceBinding> = Api::namespaced(client.clone(), &ns);
        create_azureml(&api, "locked", "locked").await;
        create_azureml(&api, "missing", "nowhere").await;

        let b = wait_ready(&api, "locked", "False", "Forbidden").await;
        let c = b.ready_condition().unwrap();
        assert!(
            c.message
                .contains("Microsoft.MachineLearningServices/workspaces/read")
                && c.message.contains("Reader")
                && c.message.contains("AuthorizationFailed"),
            "{}",
            c.message
        );
        assert!(b.status.as_ref().unwrap().tracking_uri.is_none());
        assert!(!b.is_ready());

        let b = wait_ready(&api, "missing", "False", "WorkspaceNotFound").await;
        let m = &b.ready_condition().unwrap().message;
        assert!(
            m.contains("nowhere") && m.contains("ml-rg") && m.contains(SUB),
            "{m}"
        );

        eventually("a Warning Forbidden event", WAIT, || async {
            events_for(&client, &ns, "locked")
                .await
                .into_iter()
                .find(|e| {
                    e.reason.as_deref() == Some("Forbidden")
                        && e.type_.as_deref() == Some("Warning")
                })
        })
        .await;
        assert!(
            op.metrics
                .render()
                .contains("reconcile_errors_total{reason=\"Forbidden\"}")
        );
        // 403 is not retried within a resolve.
        assert_eq!(fake.arm_calls("locked"), 1);
        op.stop().await;
    })
    .await;
}

#[tokio::test]
async fn refresh_picks_up_a_new_uri_and_keeps_the_last_good_one_on_failure() {
    with_temp_ns("ctl-refresh", |client, ns| async move {
        let (env, subject, _token_file) = workload_identity(&client, &ns).await;
        let fake = fake_for_workload_identity(&client, &subject).await;
        fake.set_workspace(SUB, "ml-rg", "moving", &tracking_uri_for("moving"));
        // Each change below is made right after the previous one shows, well within one
        // interval, so exactly one ARM call sees each.
        let mut cfg = config(&ns, "lease-refresh", Some(&fake), env);
        cfg.refresh_interval = Duration::from_secs(2);
        cfg.error_retry = Duration::from_secs(2);
        let op = Operator::start(&client, cfg);
        let api: Api<MlflowWorkspaceBinding> = Api::namespaced(client.clone(), &ns);
        create_azureml(&api, "moving", "moving").await;
        wait_ready(&api, "moving", "True", "Resolved").await;
        assert_eq!(fake.arm_calls("moving"), 1, "the first resolve");

        let moved = "azureml://1234.workspace.westeurope.api.azureml.ms/mlflow/v1.0/x";
        fake.set_workspace(SUB, "ml-rg", "moving", moved);
        eventually("the new URI in status", WAIT, || async {
            let b = api.get("moving").await.ok()?;
            (b.status?.tracking_uri.as_deref() == Some(moved)).then_some(())
        })
        .await;
        assert_eq!(fake.arm_calls("moving"), 2, "one call per refresh");

        fake.always("moving", Some(Reply::Forbidden));
        let b = wait_ready(&api, "moving", "False", "Forbidden").await;
        assert_eq!(
            b.status.unwrap().tracking_uri.as_deref(),
            Some(moved),
            "the last good URI stays while a refresh fails"
        );
        assert_eq!(fake.arm_calls("moving"), 3, "a 403 is not retried");

        fake.always("moving", None);
        wait_ready(&api, "moving", "True", "Resolved").await;
        assert_eq!(
            fake.arm_calls("moving"),
            4,
            "one call after the failure's retry delay"
        );
        op.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_spec_change_resolves_at_once() {
    with_temp_ns("ctl-spec", |client, ns| async move {
        let (env, subject, _token_file) = workload_identity(&client, &ns).await;
        let fake = fake_for_workload_identity(&client, &subject).await;
        fake.set_workspace(SUB, "ml-rg", "first", &tracking_uri_for("first"));
        fake.set_workspace(SUB, "ml-rg", "second", &tracking_uri_for("second"));
        let op = Operator::start(&client, config(&ns, "lease-spec", Some(&fake), env));
        let api: Api<MlflowWorkspaceBinding> = Api::namespaced(client.clone(), &ns);
        create_azureml(&api, "b", "first").await;
        wait_ready(&api, "b", "True", "Resolved").await;
        api.patch(
            "b",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"azureML": {"workspaceName": "second"}}})),
        )
        .await
        .unwrap();
        let b = wait_ready(&api, "b", "True", "Resolved").await;
        assert_eq!(b.status.as_ref().unwrap().observed_generation, Some(2));
        assert_eq!(
            b.status.unwrap().tracking_uri.as_deref(),
            Some(tracking_uri_for("second").as_str())
        );
        op.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_restarted_controller_leaves_status_untouched() {
    with_temp_ns("ctl-restart", |client, ns| async move {
        let (env, subject, _token_file) = workload_identity(&client, &ns).await;
        let fake = fake_for_workload_identity(&client, &subject).await;
        fake.set_workspace(SUB, "ml-rg", "steady", &tracking_uri_for("steady"));
        let api: Api<MlflowWorkspaceBinding> = Api::namespaced(client.clone(), &ns);
        create_azureml(&api, "steady", "steady").await;
        api.create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "mlflow-operator.io/v1alpha1",
                "kind": "MlflowWorkspaceBinding",
                "metadata": {"name": "plain"},
                "spec": {"trackingUri": "https://mlflow.example.com"}
            }))
            .unwrap(),
        )
        .await
        .unwrap();

        let op = Operator::start(
            &client,
            config(&ns, "lease-restart", Some(&fake), env.clone()),
        );
        wait_ready(&api, "steady", "True", "Resolved").await;
        wait_ready(&api, "plain", "True", "Resolved").await;
        // Pods are counted once the pod list is in: that may be a second write.
        let before = wait_counted(&api, "steady").await;
        let plain_before = wait_counted(&api, "plain").await;
        eventually("both bindings counted Ready", WAIT, || async {
            (op.ready_gauge("True") == 2).then_some(())
        })
        .await;
        op.stop().await;
        let calls_before = fake.arm_calls("steady");

        let op = Operator::start(&client, config(&ns, "lease-restart", Some(&fake), env));
        // The new controller resolved the workspace again (fresh cache) and finished both
        // reconciles (the gauge is set at the end of a reconcile).
        eventually(
            "the restarted controller reconciled both bindings",
            WAIT,
            || async {
                (op.reconciles() >= 2
                    && op.ready_gauge("True") == 2
                    && fake.arm_calls("steady") > calls_before)
                    .then_some(())
            },
        )
        .await;
        let after = api.get("steady").await.unwrap();
        let plain_after = api.get("plain").await.unwrap();
        assert_eq!(after.resource_version(), before.resource_version());
        assert_eq!(
            plain_after.resource_version(),
            plain_before.resource_version()
        );
        let events = events_for(&client, &ns, "steady").await;
        assert_eq!(
            events
                .iter()
                .filter(|e| e.reason.as_deref() == Some("Resolved"))
                .count(),
            1,
            "no second Resolved event after a restart: {events:?}"
        );
        op.stop().await;
    })
    .await;
}

/// A client of the API server through a loopback port nothing listens on yet, and the
/// forwarder that later opens that port onto the real API server.
async fn client_before_the_api_server() -> (Client, impl FnOnce() -> AbortOnDrop) {
    let mut config = kube::Config::infer().await.unwrap();
    let target = config.cluster_url.authority().unwrap().to_string();
    let port = common::free_port();
    let uri = config
        .cluster_url
        .to_string()
        .replace(&target, &format!("127.0.0.1:{port}"));
    config.cluster_url = uri.parse().unwrap();
    let client = Client::try_from(config).unwrap();
    let open = move || {
        AbortOnDrop(tokio::spawn(async move {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                tokio::spawn(async move {
                    let mut outbound = tokio::net::TcpStream::connect(target).await?;
                    tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await
                });
            }
        }))
    };
    (client, open)
}

/// The API server unreachable when the controller starts (a node or control plane coming up):
/// the election is retried, and once the API server answers the controller leads and resolves.
#[tokio::test]
async fn a_controller_started_before_the_api_server_answers_leads_once_it_does() {
    with_temp_ns("ctl-late", |client, ns| async move {
        let (late, open) = client_before_the_api_server().await;
        let op = Operator::start(&late, config(&ns, "lease-late", None, AzureEnv::default()));
        // Long enough for the first attempts to fail (refused connections fail at once).
        let failing = Duration::from_secs(2);
        let mut leader = op.leader.clone();
        match tokio::time::timeout(failing, leader.wait_for(|l| *l)).await {
            Err(_) => {}
            Ok(Ok(_)) => panic!("led without an API server"),
            Ok(Err(_)) => panic!("the controller gave up: it no longer says whether it leads"),
        }
        let _forwarder = open();
        eventually("the controller to lead", WAIT, || async {
            op.is_leader().then_some(())
        })
        .await;
        let api: Api<MlflowWorkspaceBinding> = Api::namespaced(client.clone(), &ns);
        let b: MlflowWorkspaceBinding = serde_json::from_value(json!({
            "apiVersion": "mlflow-operator.io/v1alpha1", "kind": "MlflowWorkspaceBinding",
            "metadata": {"name": "late"},
            "spec": {"trackingUri": "http://mlflow.late:5000", "experimentName": "e"}
        }))
        .unwrap();
        api.create(&PostParams::default(), &b).await.unwrap();
        wait_ready(&api, "late", "True", "Resolved").await;
        op.stop().await;
    })
    .await;
}

#[tokio::test]
async fn only_the_leader_reconciles_and_the_other_takes_over() {
    with_temp_ns("ctl-leader", |client, ns| async move {
        let (env, subject, _token_file) = workload_identity(&client, &ns).await;
        let fake = fake_for_workload_identity(&client, &subject).await;
        fake.set_workspace(SUB, "ml-rg", "ws-ha", &tracking_uri_for("ws-ha"));
        let a = Operator::start(&client, config(&ns, "lease-ha", Some(&fake), env.clone()));
        let b = Operator::start(&client, config(&ns, "lease-ha", Some(&fake), env));
        eventually("one leader", WAIT, || async {
            (a.is_leader() || b.is_leader()).then_some(())
        })
        .await;
        let api: Api<MlflowWorkspaceBinding> = Api::namespaced(client.clone(), &ns);
        create_azureml(&api, "one", "ws-ha").await;
        wait_ready(&api, "one", "True", "Resolved").await;
        let (leader, follower) = if a.is_leader() { (a, b) } else { (b, a) };
        assert!(!follower.is_leader(), "never two leaders");
        assert!(leader.reconciles() >= 1);
        assert_eq!(follower.reconciles(), 0, "the follower does not reconcile");

        leader.stop().await;
        eventually("the follower takes over", WAIT, || async {
            follower.is_leader().then_some(())
        })
        .await;
        create_azureml(&api, "two", "ws-ha").await;
        wait_ready(&api, "two", "True", "Resolved").await;
        assert!(follower.reconciles() >= 2);
        follower.stop().await;
    })
    .await;
}

/// Installed without an Azure identity where nothing answers at IMDS's address (here a
/// listener that accepts and never answers, as a dropped link-local range looks): the binding
/// says Resolving at once and that the operator has no credential within the probe's seconds,
/// not after azure-identity's whole retry budget.
#[tokio::test]
async fn no_operator_identity_is_credential_unavailable_within_seconds() {
    with_temp_ns("ctl-nocred", |client, ns| async move {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut cfg = config(&ns, "lease-nocred", None, AzureEnv::default());
        cfg.azure.imds_probe.url = format!("http://{}/metadata", silent.local_addr().unwrap());
        let probe = cfg.azure.imds_probe.timeout;
        let op = Operator::start(&client, cfg);
        let api: Api<MlflowWorkspaceBinding> = Api::namespaced(client.clone(), &ns);
        let created = Instant::now();
        create_azureml(&api, "orphan", "ws-any").await;
        let b = wait_ready(&api, "orphan", "Unknown", "Resolving").await;
        let m = &b.ready_condition().unwrap().message;
        assert!(
            m.contains("ws-any") && m.contains("managed identity"),
            "{m}"
        );
        let b = wait_ready(&api, "orphan", "False", "CredentialUnavailable").await;
        let took = created.elapsed();
        let m = &b.ready_condition().unwrap().message;
        assert!(
            m.contains("nothing answered at the managed identity endpoint"),
            "{m}"
        );
        assert!(
            m.contains("AZURE_FEDERATED_TOKEN_FILE") && m.contains("AZURE_CLIENT_SECRET"),
            "{m}"
        );
        assert!(took < probe + Duration::from_secs(5), "said after {took:?}");
        op.stop().await;
    })
    .await;
}

/// A slow ARM: the new binding has Ready Unknown (Resolving) meanwhile, then Resolved.
#[tokio::test]
async fn a_binding_says_resolving_while_arm_is_slow() {
    with_temp_ns("ctl-slow", |client, ns| async move {
        let fake = FakeAzure::start(client.clone(), sp_identity()).await;
        fake.set_workspace(SUB, "ml-rg", "slow", &tracking_uri_for("slow"));
        fake.script("slow", [Reply::Delay(Duration::from_secs(4))]);
        let op = Operator::start(&client, config(&ns, "lease-slow", Some(&fake), sp_env()));
        let api: Api<MlflowWorkspaceBinding> = Api::namespaced(client.clone(), &ns);
        create_azureml(&api, "s", "slow").await;
        let b = wait_ready(&api, "s", "Unknown", "Resolving").await;
        let m = &b.ready_condition().unwrap().message;
        assert!(m.contains("slow") && m.contains("client secret"), "{m}");
        assert_eq!(b.status.unwrap().tracking_uri, None);
        let b = wait_ready(&api, "s", "True", "Resolved").await;
        let uri = tracking_uri_for("slow");
        assert_eq!(
            b.status.unwrap().tracking_uri.as_deref(),
            Some(uri.as_str())
        );
        op.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_wrong_federated_subject_is_authentication_failed() {
    with_temp_ns("ctl-badsub", |client, ns| async move {
        let (env, _subject, _token_file) = workload_identity(&client, &ns).await;
        let fake = fake_for_workload_identity(&client, "system:serviceaccount:other:sa").await;
        fake.set_workspace(SUB, "ml-rg", "ws-x", &tracking_uri_for("ws-x"));
        let op = Operator::start(&client, config(&ns, "lease-badsub", Some(&fake), env));
        let api: Api<MlflowWorkspaceBinding> = Api::namespaced(client.clone(), &ns);
        create_azureml(&api, "x", "ws-x").await;
        let b = wait_ready(&api, "x", "False", "AuthenticationFailed").await;
        let m = &b.ready_condition().unwrap().message;
        assert!(m.contains("AADSTS70021"), "{m}");
        assert_eq!(fake.arm_calls("ws-x"), 0);
        op.stop().await;
    })
    .await;
}

/// Entra ID failing (503) is an outage to wait out, not a refused credential: a binding with a
/// last good URI would keep it (RefreshFailing), and one without says AuthorityUnavailable.
#[tokio::test]
async fn an_entra_outage_is_authority_unavailable_until_it_ends() {
    with_temp_ns("ctl-entra", |client, ns| async move {
        let (env, subject, _token_file) = workload_identity(&client, &ns).await;
        let fake = fake_for_workload_identity(&client, &subject).await;
        fake.set_workspace(SUB, "ml-rg", "ws-e", &tracking_uri_for("ws-e"));
        fake.entra_down(true);
        let mut cfg = config(&ns, "lease-entra", Some(&fake), env);
        cfg.error_retry = Duration::from_secs(2);
        let op = Operator::start(&client, cfg);
        let api: Api<MlflowWorkspaceBinding> = Api::namespaced(client.clone(), &ns);
        create_azureml(&api, "e", "ws-e").await;
        let b = wait_ready(&api, "e", "False", "AuthorityUnavailable").await;
        let m = &b.ready_condition().unwrap().message;
        // azure_identity retries the 503 itself, so the bound on the exchange may end it first.
        assert!(
            m.contains("could not get a token")
                && (m.contains("AADSTS90033") || m.contains("no answer within")),
            "{m}"
        );
        assert_eq!(fake.arm_calls("ws-e"), 0);
        fake.entra_down(false);
        let b = wait_ready(&api, "e", "True", "Resolved").await;
        assert_eq!(
            b.status.unwrap().tracking_uri.as_deref(),
            Some(tracking_uri_for("ws-e").as_str())
        );
        op.stop().await;
    })
    .await;
}

/// `env[].valueFrom.fileKeyRef` is dropped from pods by an API server older than 1.35: there
/// the binding is not Ready and says which variable and what to use instead; from 1.35 it is
/// Ready like any other.
#[tokio::test]
async fn a_binding_env_the_api_server_would_drop_is_not_ready_on_older_servers() {
    with_temp_ns("ctl-envfile", |client, ns| async move {
        let op = Operator::start(&client, config(&ns, "lease-envfile", None, AzureEnv::default()));
        let api: Api<MlflowWorkspaceBinding> = Api::namespaced(client.clone(), &ns);
        let b: MlflowWorkspaceBinding = serde_json::from_value(json!({
            "apiVersion": "mlflow-operator.io/v1alpha1",
            "kind": "MlflowWorkspaceBinding",
            "metadata": {"name": "envfile"},
            "spec": {"trackingUri": "https://mlflow.example.com", "env": [
                {"name": "PLAIN", "value": "1"},
                {"name": "TOKEN", "valueFrom": {"fileKeyRef": {"volumeName": "config", "path": "env", "key": "TOKEN"}}}
            ]}
        }))
        .unwrap();
        api.create(&PostParams::default(), &b).await.unwrap();
        let (minor, git_version) = common::server_version(&client).await;
        if minor >= 35 {
            wait_ready(&api, "envfile", "True", "Resolved").await;
        } else {
            let b = wait_ready(&api, "envfile", "False", "UnsupportedByCluster").await;
            let message = &b.ready_condition().unwrap().message;
            for part in ["spec.env[1] (TOKEN)", "fileKeyRef", &git_version, "secretKeyRef"] {
                assert!(message.contains(part), "{part} missing from: {message}");
            }
        }
        op.stop().await;
    })
    .await;
}

/// The recorder on the real API server: a repeat within six minutes is counted in the first
/// Event's series (its note kept), another reason is another Event, and a repeat of an Event
/// that was deleted meanwhile is posted anew.
#[tokio::test]
async fn events_repeat_in_a_series_and_come_back_when_deleted() {
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::api::events::v1::Event as K8sEvent;
    use mlflow_operator::recorder::{Event, EventType, Recorder, Reporter};
    with_temp_ns("ctrl-events", |client, ns| async move {
        let reporter = Reporter {
            controller: "mlflow-operator".into(),
            instance: Some("test".into()),
        };
        let recorder = Recorder::new(client.clone(), reporter);
        let about = ObjectReference {
            api_version: Some("mlflow-operator.io/v1alpha1".into()),
            kind: Some("MlflowWorkspaceBinding".into()),
            namespace: Some(ns.clone()),
            name: Some("flaky".into()),
            ..Default::default()
        };
        let ev = |reason: &str, note: &str| Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(note.into()),
            action: "Resolve".into(),
            secondary: None,
        };
        let publish = |e: Event| {
            let (recorder, about) = (recorder.clone(), about.clone());
            async move { recorder.publish(&e, &about).await.expect("publish") }
        };
        publish(ev("ArmUnreachable", "first")).await;
        publish(ev("ArmUnreachable", "second")).await;
        publish(ev("ArmUnreachable", "third")).await;
        publish(ev("AuthorizationFailed", "other")).await;
        let by_reason = |list: &[K8sEvent], r: &str| -> Vec<K8sEvent> {
            let of = |e: &&K8sEvent| e.reason.as_deref() == Some(r);
            list.iter().filter(of).cloned().collect()
        };
        let listed = events_for(&client, &ns, "flaky").await;
        let series = by_reason(&listed, "ArmUnreachable");
        assert_eq!(series.len(), 1, "one Event for the three: {series:?}");
        assert_eq!(series[0].note.as_deref(), Some("first"));
        assert_eq!(series[0].series.as_ref().map(|s| s.count), Some(3));
        assert_eq!(series[0].reporting_instance.as_deref(), Some("test"));
        assert_eq!(by_reason(&listed, "AuthorizationFailed").len(), 1);

        let events: Api<K8sEvent> = Api::namespaced(client.clone(), &ns);
        let name = series[0].metadata.name.clone().unwrap();
        events.delete(&name, &Default::default()).await.unwrap();
        publish(ev("ArmUnreachable", "after the delete")).await;
        let again = by_reason(&events_for(&client, &ns, "flaky").await, "ArmUnreachable");
        assert_eq!(again.len(), 1, "{again:?}");
        assert_eq!(again[0].note.as_deref(), Some("after the delete"));
        assert_eq!(again[0].series, None);
    })
    .await;
}
