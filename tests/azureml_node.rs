//! The whole promise on the real node: labelled training pods running the real `mlflow`,
//! `azureml-mlflow` and `azure-identity` clients (the example training image) log a run with
//! nothing but what the operator injected, plus the routing and trust a test must add: CoreDNS
//! maps Azure's real host names to fakes in this process (`common::fake_cloud`), and the pods
//! trust the fakes' CA through `REQUESTS_CA_BUNDLE` from a mounted ConfigMap.
//!
//! The chart is installed once with the operator's own workload identity (a projected token the
//! fake Entra ID exchanges) and the fakes' CA; the controller resolves every azureML binding
//! through the fake ARM. Each case runs in its own namespace and is asserted through the MLflow
//! server's REST API (run FINISHED, in the expected experiment, with its parameter, metric, tag
//! and artifact) and through the fakes' logs (whose token was exchanged, which client id).
//!
//! One case runs every identity mode at once and then searches every log of the cluster for the
//! credentials that crossed the fakes (`common::log_sweep`).
//!
//! The fakes' access tokens live a minute (`TOKEN_LIFETIME`), so every client, the operator's
//! own included, renews its token many times over the suite; one case (`token_expiry`) logs
//! for five minutes in every identity mode at once and counts the renewals. The run across a
//! kubelet rotation of the projected token (12.5 minutes) is a test binary of its own,
//! `azureml_token_rotation`, which `hack/test` runs beside the whole suite.
//!
//! The cases share one runtime, one set of fakes and one release, set up by the first case to
//! start; when the test process exits the release is uninstalled and the namespaces deleted.

use mlflow_operator_test_support as common;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{LogParams, PostParams};
use kube::{Api, Client};
use mlflow_operator::binding::MlflowWorkspaceBinding;
use serde_json::{Value, json};

use common::fake_cloud::{self, Credential, Exchange, FakeCloud};
use common::helm::helm_ok;
use common::mlflow::{MlflowServer, Rest};
use common::node::{
    self, MINUTE, RELEASE, RELEASE_NS, SELECTOR, TRACK, install_args, is_ready, operators_ready,
    pods_when,
};
use common::token_renewal::TOKEN_LIFETIME;
use common::training::{
    self, CA_CONFIGMAP, TRAINING_IMAGE, container, first_pod, pod_spec, trained_within,
    trainer_subject, waiting,
};
use common::{client, ensure_crd, eventually_ok, kubectl, random_suffix};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
/// The operator's own application (workload identity of its ServiceAccount).
const OPERATOR_CLIENT: &str = "0c7d3a52-1f0e-4d8b-9a64-5e2f1b3c4d01";
/// The training teams' application, federated with their `trainer` ServiceAccounts.
const TEAM_CLIENT: &str = "9c6f0e4d-2f53-4f8e-9d6a-1c4f2b7e8a02";
const SP_SECRET_CLIENT: &str = "5b2e8f1a-7c3d-4e9f-8a1b-2c3d4e5f6a03";
const SP_CERT_CLIENT: &str = "6c3f9a2b-8d4e-4fa0-9b2c-3d4e5f6a7b04";
const MI_CLIENT: &str = "7d4a0b3c-9e5f-4ab1-8c3d-4e5f6a7b8c05";
/// The service principal of the log sweep, whose secret no other case knows.
const SP_SWEEP_CLIENT: &str = "9f6c2d5e-1a7b-4cd3-8e5f-6a7b8c9d0e07";
/// A service principal whose Secret in the cluster holds a stale client secret.
const SP_STALE_CLIENT: &str = "8e5b1c4d-0f6a-4bc2-9d4e-5f6a7b8c9d06";
const SUBSCRIPTION: &str = "3b0c1d2e-4f5a-4b6c-8d7e-9f0a1b2c3d4e";
const RESOURCE_GROUP: &str = "ml-rg";
const WORKSPACE: &str = "ml-ws";

/// What every case shares: the fakes, the MLflow server behind the fake front door, the release.
struct Shared {
    client: Client,
    cloud: FakeCloud,
    server: MlflowServer,
    operator_subject: String,
}

static SUITE: node::Suite<Shared> = node::Suite::new();

#[path = "azureml_node/token_expiry.rs"]
mod token_expiry;

/// Runs one case with what the cases share (set up by the first).
fn case<F, Fut>(body: F)
where
    F: FnOnce(&'static Shared) -> Fut,
    Fut: Future<Output = ()>,
{
    SUITE.case(setup(), clean_up_at_exit, body);
}

/// Uninstalls the release, deletes the namespaces, prints the fakes' request log, stops the
/// MLflow server and unmaps the host names.
extern "C" fn clean_up_at_exit() {
    let Some(shared) = SUITE.tear_down() else {
        return;
    };
    println!("----- fake cloud request log -----");
    for line in shared.cloud.request_log() {
        println!("{line}");
    }
    shared.server.kill();
    fake_cloud::unmap_hosts();
}

// ---------------------------------------------------------------- the cases

/// `token_expiry`'s five-minute run, here so that its name sorts first: libtest starts cases in
/// name order, and a long one started last would add its minutes to everything before it. It
/// sets the suite's length; the others run beside it.
#[test]
fn a_five_minute_run_in_every_identity_mode_outlives_its_access_tokens() {
    token_expiry::five_minute_run_in_every_identity_mode();
}

/// azureML binding + workload identity: a labelled Deployment and a labelled Job log through
/// Azure ML with the `trainer` ServiceAccount's exchanged token; the operator resolved the
/// workspace through ARM with its own ServiceAccount's exchanged token.
#[test]
fn workload_identity_deployment_and_job_log_through_azure_ml() {
    case(|sh| async move {
        let (ns, experiment) = team(sh, "wi").await;
        let identity = federated_team_identity(sh, &ns);
        let uri = azureml_binding(sh, &ns, &experiment, identity).await;
        assert!(uri.starts_with("azureml://westeurope.api.azureml.ms/mlflow/v1.0/subscriptions/"));

        let command = json!(["sh", "-c", "python /app/train.py && exec sleep 3600"]);
        let template = pod_spec("trainer", "Always", container(command, json!([])));
        create_deployment(sh, &ns, "train-deploy", template).await;
        plain_job(&ns, "train-job").await;

        let from_deployment = trained(sh, &ns, "app=train-deploy").await;
        let from_job = trained(sh, &ns, "job-name=train-job").await;
        let rest = Rest::local(&sh.server);
        for run in [&from_deployment, &from_job] {
            rest.assert_run(run, &experiment).await;
            assert!(
                run["tracking_uri"]
                    .as_str()
                    .unwrap()
                    .starts_with("azureml://"),
                "{run}"
            );
        }
        assert_team_exchanged(sh, &ns);
        assert_front_door_saw(sh, &from_job, TEAM_CLIENT, "federated");
        let arm: Vec<_> = sh
            .cloud
            .calls()
            .into_iter()
            .filter(|c| c.service == "arm" && c.status == 200)
            .collect();
        assert!(
            arm.iter()
                .any(|c| c.client_id.as_deref() == Some(OPERATOR_CLIENT)
                    && c.via.as_deref() == Some("federated")
                    && c.subject.as_deref() == Some(sh.operator_subject.as_str())
                    && c.path.ends_with(&format!("/workspaces/{WORKSPACE}"))),
            "ARM must have served the workspace to the operator's own workload identity \
             ({}); ARM saw: {arm:#?}",
            sh.operator_subject
        );
        assert_exchanged(
            sh,
            "entra",
            OPERATOR_CLIENT,
            "federated",
            Some(&sh.operator_subject),
        );
    });
}

/// azureML + a service principal with a client secret from a Secret (MSAL: OpenID
/// configuration, then the token endpoint with client_id + client_secret).
#[test]
fn service_principal_with_client_secret_logs_through_azure_ml() {
    case(|sh| async move {
        let (ns, experiment) = team(sh, "sp-secret").await;
        let secret = format!("s3cr3t~{}", random_suffix());
        let identity = secret_identity(sh, &ns, SP_SECRET_CLIENT, &secret, &secret).await;
        let run = logged_through_azure_ml(sh, &ns, &experiment, identity).await;
        assert_exchanged(sh, "entra", SP_SECRET_CLIENT, "client_secret", None);
        assert_msal_discovered_the_tenant(sh);
        assert_front_door_saw(sh, &run, SP_SECRET_CLIENT, "client_secret");
    });
}

/// azureML + a service principal with a certificate Secret (PEM with key): MSAL signs a client
/// assertion with the certificate's key, which the fake Entra ID verifies.
#[test]
fn service_principal_with_certificate_logs_through_azure_ml() {
    case(|sh| async move {
        let (ns, experiment) = team(sh, "sp-cert").await;
        let (pem, credential) = fake_cloud::service_principal_certificate(SP_CERT_CLIENT);
        sh.cloud.register_app(TENANT, SP_CERT_CLIENT, credential);
        create_secret(sh, &ns, "sp-cert", &[("tls.pem", &pem)]).await;
        let identity = json!({"servicePrincipal": {
            "clientId": SP_CERT_CLIENT, "tenantId": TENANT,
            "certificateSecretRef": {"name": "sp-cert", "key": "tls.pem"},
        }});
        let run = logged_through_azure_ml(sh, &ns, &experiment, identity).await;
        assert_exchanged(sh, "entra", SP_CERT_CLIENT, "certificate", None);
        assert_msal_discovered_the_tenant(sh);
        assert_front_door_saw(sh, &run, SP_CERT_CLIENT, "certificate");
    });
}

/// azureML + a user-assigned managed identity: azure-identity asks IMDS at its real address.
#[test]
fn managed_identity_logs_through_azure_ml() {
    case(|sh| async move {
        let (ns, experiment) = team(sh, "mi").await;
        sh.cloud.register_managed_identity(TENANT, MI_CLIENT);
        let identity = json!({"managedIdentity": {"clientId": MI_CLIENT}});
        let run = logged_through_azure_ml(sh, &ns, &experiment, identity).await;
        assert_exchanged(sh, "imds", MI_CLIENT, "managed_identity", None);
        assert_front_door_saw(sh, &run, MI_CLIENT, "managed_identity");
    });
}

/// A trackingUri binding to an in-cluster `mlflow server --app-name basic-auth` behind a
/// Service, with credentials from a Secret the webhook references (never copies).
#[test]
fn tracking_uri_binding_with_basic_auth_logs_to_an_in_cluster_server() {
    case(|sh| async move {
        let (ns, experiment) = team(sh, "basic").await;
        // mlflow refuses admin passwords of 12 characters or fewer.
        let password = format!("trainer-password-{}", random_suffix());
        create_secret(
            sh,
            &ns,
            "mlflow-creds",
            &[("username", "trainer-admin"), ("password", &password)],
        )
        .await;
        let server = in_cluster_server(sh, &ns, Some(("trainer-admin", &password))).await;
        apply_binding(
            sh,
            &ns,
            json!({
                "trackingUri": format!("http://mlflow.{ns}.svc.cluster.local:5000"),
                "experimentName": experiment,
                "auth": {"secretName": "mlflow-creds"},
            }),
        )
        .await;
        plain_job(&ns, "train").await;
        let run = trained(sh, &ns, "job-name=train").await;
        server.assert_run(&run, &experiment).await;
        let pod = job_pod(sh, &ns, "train").await;
        let env = &pod["spec"]["containers"][0]["env"];
        let password_env = env
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "MLFLOW_TRACKING_PASSWORD")
            .unwrap_or_else(|| panic!("no MLFLOW_TRACKING_PASSWORD injected: {env}"));
        assert_eq!(
            password_env["valueFrom"]["secretKeyRef"]["name"], "mlflow-creds",
            "{password_env}"
        );
        assert!(
            password_env.get("value").is_none(),
            "the Secret's value is never copied"
        );
    });
}

/// The experiment annotation overrides the binding's experiment; a container that sets its own
/// MLFLOW_TRACKING_URI logs where it said (an in-cluster server: examples/mlflow-server.yaml),
/// not to the binding's workspace.
#[test]
fn experiment_annotation_overrides_the_binding_and_an_own_tracking_uri_is_kept() {
    case(|sh| async move {
        let (ns, binding_experiment) = team(sh, "override").await;
        let annotated = format!("fraud-annotated-{}", random_suffix());
        let identity = federated_team_identity(sh, &ns);
        azureml_binding(sh, &ns, &binding_experiment, identity).await;
        let own = example_server(sh).await;

        create_job(
            &ns,
            "annotated",
            json!({}),
            json!({"mlflow-operator.io/experiment-name": annotated}),
            container(json!(null), json!([])),
        )
        .await;
        let own_uri = "http://mlflow.mlflow.svc.cluster.local:5000";
        create_job(
            &ns,
            "self-configured",
            json!({}),
            json!({}),
            container(
                json!(null),
                json!([{"name": "MLFLOW_TRACKING_URI", "value": own_uri}]),
            ),
        )
        .await;

        let run = trained(sh, &ns, "job-name=annotated").await;
        let rest = Rest::local(&sh.server);
        rest.assert_run(&run, &annotated).await;
        assert!(
            rest.experiment_id(&binding_experiment).await.is_none(),
            "nothing may land in the binding's experiment {binding_experiment} when the pod names another"
        );

        let own_run = trained(sh, &ns, "job-name=self-configured").await;
        assert_eq!(own_run["tracking_uri"], own_uri, "{own_run}");
        own.assert_run(&own_run, "Default").await;
        assert!(
            rest.run(own_run["run_id"].as_str().unwrap())
                .await
                .is_none(),
            "the self-configured pod's run must not be in the binding's workspace"
        );
    });
}

/// A training-operator shaped workload: master and worker pods labelled like a PyTorchJob's,
/// each injected and each logging its run.
#[test]
fn pytorchjob_shaped_master_and_worker_both_log() {
    case(|sh| async move {
        let (ns, experiment) = team(sh, "pytorch").await;
        let identity = federated_team_identity(sh, &ns);
        let mut spec = azureml_spec(&experiment, identity);
        spec["systemMetrics"] = json!({"samplingIntervalSeconds": 1});
        apply_binding(sh, &ns, spec).await;
        for (rank, replica) in ["master", "worker"].iter().enumerate() {
            let labels = json!({
                "training.kubeflow.org/job-name": "mnist",
                "training.kubeflow.org/operator-name": "pytorchjob-controller",
                "training.kubeflow.org/replica-type": replica,
                "training.kubeflow.org/replica-index": "0",
                "training.kubeflow.org/job-role": if rank == 0 { "master" } else { "worker" },
            });
            let mut c = container(
                json!(null),
                json!([
                    {"name": "MASTER_ADDR", "value": "mnist-master-0"},
                    {"name": "MASTER_PORT", "value": "23456"},
                    {"name": "WORLD_SIZE", "value": "2"},
                    {"name": "RANK", "value": rank.to_string()},
                    {"name": "EPOCH_SECONDS", "value": "2"},
                ]),
            );
            c["name"] = json!("pytorch");
            create_job(&ns, &format!("mnist-{replica}-0"), labels, json!({}), c).await;
        }
        let rest = Rest::local(&sh.server);
        let mut node_ids = BTreeSet::new();
        for replica in ["master", "worker"] {
            let run = trained(
                sh,
                &ns,
                &format!("training.kubeflow.org/replica-type={replica}"),
            )
            .await;
            rest.assert_run(&run, &experiment).await;
            let (_, metrics) = run_record(&rest, &run).await;
            let pod = job_pod(sh, &ns, &format!("mnist-{replica}-0")).await;
            node_ids.insert(assert_system_metrics_of(&metrics, &pod));
        }
        assert_eq!(node_ids.len(), 2, "two pods, two node ids: {node_ids:?}");
        assert_team_exchanged(sh, &ns);
    });
}

/// Every run says where it came from: a Job's run, through the Azure ML front door with workload
/// identity, carries every Kubernetes tag with the real pod name, uid and node (never a literal
/// `$(`), the image, the Job, the binding and the extra tags, hostile text included, as MLflow's
/// REST API returns them.
#[test]
fn a_jobs_run_carries_the_pod_it_came_from() {
    case(|sh| async move {
        let (ns, experiment) = team(sh, "tags").await;
        let identity = federated_team_identity(sh, &ns);
        let hostile = "it's \"quoted\" $(MLFLOW_OPERATOR_POD_NAME) $$(x) $ \\ 漢 🚀";
        let mut spec = azureml_spec(&experiment, identity);
        spec["runTags"] = json!({"extra": {"team": "fraud", "note": hostile}});
        apply_binding(sh, &ns, spec).await;
        plain_job(&ns, "train").await;
        let run = trained(sh, &ns, "job-name=train").await;
        let pod = job_pod(sh, &ns, "train").await;
        let (tags, _) = run_record(&Rest::local(&sh.server), &run).await;
        let owner = [("k8s.job.name", "train")];
        let extra = [("team", "fraud"), ("note", hostile)];
        assert_tagged_with_its_pod(&tags, &pod, &owner, &extra);
    });
}

/// The same with any MLflow server (the in-cluster example server): a Job's and a Deployment's
/// runs carry their pod's tags, the Deployment's its ReplicaSet and Deployment; with
/// `systemMetrics`, each run has system metrics under its own pod's name.
#[test]
fn job_and_deployment_runs_carry_their_pods_and_system_metrics() {
    case(|sh| async move {
        let (ns, experiment) = team(sh, "where").await;
        let server = example_server(sh).await;
        let spec = json!({
            "trackingUri": "http://mlflow.mlflow.svc.cluster.local:5000",
            "experimentName": experiment,
            "runTags": {"kubernetes": true, "extra": {"team": "fraud"}},
            "systemMetrics": {"enabled": true, "samplingIntervalSeconds": 1},
        });
        apply_binding(sh, &ns, spec).await;
        let slow = json!([{"name": "EPOCH_SECONDS", "value": "2"}]);
        create_job(
            &ns,
            "train",
            json!({}),
            json!({}),
            container(json!(null), slow.clone()),
        )
        .await;
        let command = json!(["sh", "-c", "python /app/train.py && exec sleep 3600"]);
        let template = pod_spec("trainer", "Always", container(command, slow));
        create_deployment(sh, &ns, "train-deploy", template).await;
        let extra = [("team", "fraud")];
        let from_job = trained(sh, &ns, "job-name=train").await;
        let (tags, metrics) = run_record(&server, &from_job).await;
        let pod = job_pod(sh, &ns, "train").await;
        assert_tagged_with_its_pod(&tags, &pod, &[("k8s.job.name", "train")], &extra);
        assert_system_metrics_of(&metrics, &pod);

        let from_deployment = trained(sh, &ns, "app=train-deploy").await;
        let (tags, metrics) = run_record(&server, &from_deployment).await;
        let pods: Api<Pod> = Api::namespaced(sh.client.clone(), &ns);
        let one = |ps: &[Pod]| ps.len() == 1;
        let pod = pods_when(
            &pods,
            "app=train-deploy",
            "the Deployment's pod",
            MINUTE,
            one,
        )
        .await;
        let pod = serde_json::to_value(&pod[0]).unwrap();
        let replicaset = pod["metadata"]["ownerReferences"][0]["name"]
            .as_str()
            .unwrap();
        let owner = [
            ("k8s.replicaset.name", replicaset),
            ("k8s.deployment.name", "train-deploy"),
        ];
        assert_tagged_with_its_pod(&tags, &pod, &owner, &extra);
        assert_system_metrics_of(&metrics, &pod);
    });
}

/// The fake Entra ID checks the federation: a pod whose ServiceAccount the application is not
/// federated with gets AADSTS70021, its run never starts, and the pod fails (rather than hangs).
#[test]
fn rejects_a_service_account_the_application_is_not_federated_with() {
    case(|sh| async move {
        let (ns, experiment) = team(sh, "unfederated").await;
        let other = format!("system:serviceaccount:{ns}:someone-else");
        sh.cloud
            .register_app(TENANT, TEAM_CLIENT, Credential::Federated(vec![other]));
        let identity = json!({"workloadIdentity": {"clientId": TEAM_CLIENT, "tenantId": TENANT}});
        let subject = trainer_subject(&ns);
        let refused = |e: &Exchange| e.subject.as_deref() == Some(subject.as_str());
        refused_by_entra(sh, (&ns, &experiment), identity, "AADSTS70021", refused).await;
    });
}

/// The fake Entra ID checks client secrets: a stale one gets AADSTS7000215 and the pod fails.
#[test]
fn rejects_a_stale_client_secret() {
    case(|sh| async move {
        let (ns, experiment) = team(sh, "stale-secret").await;
        let current = format!("current-{}", random_suffix());
        let stale = "rotated-away";
        let identity = secret_identity(sh, &ns, SP_STALE_CLIENT, &current, stale).await;
        let refused = |e: &Exchange| e.client_id == SP_STALE_CLIENT;
        refused_by_entra(sh, (&ns, &experiment), identity, "AADSTS7000215", refused).await;
    });
}

/// A pod that would reach the workspace's azureml:// URI with no Azure credential at all (the
/// real client would end in a 15-minute device-code wait) is refused with what to set.
#[test]
fn rejects_a_pod_that_would_reach_azure_ml_with_no_credential() {
    case(|sh| async move {
        let (ns, experiment) = team(sh, "no-credential").await;
        azureml_binding(sh, &ns, &experiment, Value::Null).await;
        let pods: Api<Pod> = Api::namespaced(sh.client.clone(), &ns);
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "train", "labels": {TRACK: "true"}},
            "spec": pod_spec("trainer", "Never", container(json!(null), json!([]))),
        }))
        .unwrap();
        let refused = pods
            .create(&PostParams::default(), &pod)
            .await
            .expect_err("a pod with an azureml:// URI and no credential must be refused");
        let message = refused.to_string();
        for needed in ["15 minutes", "spec.identity", "azure.workload.identity/use"] {
            assert!(
                message.contains(needed),
                "the refusal must say {needed:?}: {message}"
            );
        }
        assert!(pods.get_opt("train").await.unwrap().is_none());
    });
}

/// A trackingUri binding that names the workspace's azureml:// URI itself (no ARM lookup) gets
/// AZUREML_CURRENT_CLOUD too, so the client never asks ARM for cloud metadata, and logs with
/// the pod's workload identity.
#[test]
fn azureml_tracking_uri_binding_logs_without_asking_arm_for_cloud_metadata() {
    case(|sh| async move {
        let (ns, experiment) = team(sh, "aml-uri").await;
        let identity = federated_team_identity(sh, &ns);
        let uri = sh
            .cloud
            .add_workspace(SUBSCRIPTION, RESOURCE_GROUP, WORKSPACE);
        let spec = json!({"trackingUri": uri, "experimentName": experiment, "identity": identity});
        apply_binding(sh, &ns, spec).await;
        plain_job(&ns, "train").await;
        let run = trained(sh, &ns, "job-name=train").await;
        Rest::local(&sh.server).assert_run(&run, &experiment).await;
        let pod = job_pod(sh, &ns, "train").await;
        let env = &pod["spec"]["containers"][0]["env"];
        assert!(
            env.as_array()
                .unwrap()
                .iter()
                .any(|e| e["name"] == "AZUREML_CURRENT_CLOUD" && e["value"] == "AzureCloud"),
            "AZUREML_CURRENT_CLOUD=AzureCloud must be injected for an azureml:// trackingUri: {env}"
        );
        let log = sh.cloud.request_log();
        assert!(
            !log.iter().any(|l| l.contains("/metadata/endpoints")),
            "no client may ask ARM for cloud metadata: {log:#?}"
        );
        assert_team_exchanged(sh, &ns);
    });
}

/// Nothing secret reaches a log. Labelled pods of every identity mode (workload identity,
/// managed identity, a service principal whose Secret holds a known client secret) log their
/// runs at once; then every log of every component is searched (`common::log_sweep`: the
/// plane, etcd's log, the kubelet, containerd, kube-proxy, CoreDNS, every container on the node
/// current and previous, and `kubectl logs` of both operator pods) for every credential that
/// crossed the fakes: each access token they issued (the operator's own included), each
/// ServiceAccount token (the projected token the pods and the operator read from their files)
/// and certificate assertion they were sent, each client secret, in the forms of
/// `log_sweep::forms`. The fakes' own request logs see tokens by design and are not searched.
/// The service principal's pod gets its secret by `secretKeyRef` only.
#[test]
fn no_token_secret_or_assertion_reaches_any_log() {
    case(|sh| async move {
        let (wi, experiment) = team(sh, "sweep-wi").await;
        let identity = federated_team_identity(sh, &wi);
        azureml_binding(sh, &wi, &experiment, identity).await;

        let (mi, experiment) = team(sh, "sweep-mi").await;
        sh.cloud.register_managed_identity(TENANT, MI_CLIENT);
        let identity = json!({"managedIdentity": {"clientId": MI_CLIENT}});
        azureml_binding(sh, &mi, &experiment, identity).await;

        let (sp, experiment) = team(sh, "sweep-sp").await;
        let suffix = format!("{}-{}", random_suffix(), random_suffix());
        let client_secret = format!("sweep-client-secret-{suffix}");
        let identity =
            secret_identity(sh, &sp, SP_SWEEP_CLIENT, &client_secret, &client_secret).await;
        azureml_binding(sh, &sp, &experiment, identity).await;

        for ns in [&wi, &mi, &sp] {
            create_job(
                ns,
                "train",
                json!({}),
                json!({}),
                container(json!(null), json!([])),
            )
            .await;
        }
        let (a, b, c) = futures::join!(
            trained(sh, &wi, "job-name=train"),
            trained(sh, &mi, "job-name=train"),
            trained(sh, &sp, "job-name=train"),
        );
        let runs: Vec<String> = [a, b, c]
            .iter()
            .map(|r| r["run_id"].as_str().unwrap().to_string())
            .collect();
        let pod = job_pod(sh, &sp, "train").await;
        let secret_env = pod["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "AZURE_CLIENT_SECRET")
            .cloned()
            .expect("AZURE_CLIENT_SECRET injected");
        assert_eq!(
            secret_env,
            json!({"name": "AZURE_CLIENT_SECRET", "valueFrom": {"secretKeyRef": {"name": "sp-creds", "key": "clientSecret"}}}),
            "the webhook references the Secret, never copies its value"
        );

        let seen = sh.cloud.secrets_seen();
        let mut secrets: Vec<(String, String)> = seen
            .iter()
            .map(|s| (s.what.clone(), s.value.clone()))
            .collect();
        secrets.push((
            "the service principal's Secret".into(),
            client_secret.clone(),
        ));
        let has = |what: &str| seen.iter().any(|s| s.what.starts_with(what));
        for what in [
            &format!("client_secret of {SP_SWEEP_CLIENT}"),
            &format!("access token of {SP_SWEEP_CLIENT}"),
            &format!("client_assertion of {TEAM_CLIENT}"),
            &format!("access token of {TEAM_CLIENT}"),
            &format!("access token of {MI_CLIENT} via IMDS"),
            &format!("client_assertion of {OPERATOR_CLIENT}"),
            &format!("access token of {OPERATOR_CLIENT}"),
        ] {
            assert!(has(what), "the flow never produced a {what}: {seen:#?}");
        }

        let mut logs = common::log_sweep::cluster_logs();
        logs.extend(common::log_sweep::pod_logs(&sh.client, RELEASE_NS, SELECTOR).await);
        // The sweep reads what it claims to: each run's pod log and the plane's logs are in it.
        for run in &runs {
            assert!(
                logs.iter()
                    .any(|l| l.source.contains("/var/log/pods/") && l.text.contains(run.as_str())),
                "the training pod log with run {run} was not swept"
            );
        }
        for part in [
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "etcd",
            "kubelet",
            "containerd",
            "kube-proxy",
            "coredns",
        ] {
            assert!(
                logs.iter()
                    .any(|l| l.source.ends_with(&format!("/logs/{part}.log"))),
                "{part}'s log was not swept"
            );
        }
        let operator_logs = logs
            .iter()
            .filter(|l| l.source.starts_with("kubectl logs"))
            .count();
        assert!(operator_logs >= 2, "both operator pods' logs");
        let lines: usize = logs.iter().map(|l| l.text.lines().count()).sum();
        let leaks = common::log_sweep::leaks(&logs, &secrets);
        let forms: usize = secrets
            .iter()
            .map(|(_, v)| common::log_sweep::forms(v).len())
            .sum();
        println!(
            "log sweep: {} credentials ({forms} strings with their encoded forms) searched in {} logs, {lines} lines: {} found",
            secrets.len(),
            logs.len(),
            leaks.len()
        );
        assert!(leaks.is_empty(), "credentials in logs: {leaks:#?}");
    });
}

// ---------------------------------------------------------------- setup

async fn setup() -> Shared {
    let client = client().await;
    ensure_crd(&client).await;
    node::remove_leftover_release(&client, RELEASE, RELEASE_NS).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());

    let server = MlflowServer::start_serving_artifacts().await;
    let cloud = FakeCloud::start(client.clone(), &server.url).await;
    cloud.set_token_lifetime(TOKEN_LIFETIME);
    fake_cloud::map_hosts().await;
    cloud.add_workspace(SUBSCRIPTION, RESOURCE_GROUP, WORKSPACE);

    // The operator's ServiceAccount is federated with its own application.
    let operator_subject = format!("system:serviceaccount:{RELEASE_NS}:{RELEASE}");
    cloud.register_app(
        TENANT,
        OPERATOR_CLIENT,
        Credential::Federated(vec![operator_subject.clone()]),
    );
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": RELEASE_NS}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("create the release namespace");
    fake_cloud::ca_configmap(&client, RELEASE_NS, CA_CONFIGMAP, &cloud.ca_pem).await;
    let client_id = format!("azure.workloadIdentity.clientId={OPERATOR_CLIENT}");
    let tenant = format!("azure.workloadIdentity.tenantId={TENANT}");
    let ca = format!("azure.caConfigMap.name={CA_CONFIGMAP}");
    helm_ok(&install_args(&[
        "--set",
        &client_id,
        "--set",
        &tenant,
        "--set",
        &ca,
        "--set",
        "azure.caConfigMap.key=ca.crt",
    ]))
    .await;
    let ready = operators_ready(&client, 2).await;
    let sa = ready[0].spec.as_ref().unwrap().service_account_name.clone();
    assert_eq!(
        format!(
            "system:serviceaccount:{RELEASE_NS}:{}",
            sa.unwrap_or_default()
        ),
        operator_subject,
        "the operator runs as the ServiceAccount its application is federated with"
    );
    Shared {
        client,
        cloud,
        server,
        operator_subject,
    }
}

/// A team namespace with the fakes' CA and a `trainer` ServiceAccount.
async fn team_namespace(sh: &Shared, prefix: &str) -> String {
    let name = format!("aml-{prefix}-{}", random_suffix());
    SUITE.remember(&name);
    training::team_namespace(&sh.client, &name, &sh.cloud.ca_pem).await;
    name
}

/// A labelled Deployment of one pod running `template`.
async fn create_deployment(sh: &Shared, ns: &str, name: &str, template: Value) {
    let deployment = common::deployment(name, 1, json!({TRACK: "true"}), template);
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(sh.client.clone(), ns)
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create the Deployment");
}

/// The run's tags and metric keys as MLflow's REST API returns them.
async fn run_record(rest: &Rest, run: &Value) -> (BTreeMap<String, String>, Vec<String>) {
    let run_id = run["run_id"].as_str().unwrap();
    let stored = rest.run(run_id).await.expect("the run");
    let entries = |kind: &str| stored["data"][kind].as_array().cloned().unwrap_or_default();
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let pair = |t: &Value| (text(&t["key"]), text(&t["value"]));
    let tags: BTreeMap<String, String> = entries("tags").iter().map(pair).collect();
    let metrics = entries("metrics").iter().map(|m| text(&m["key"])).collect();
    println!("run {run_id} tags as MLflow returned them: {tags:#?}");
    (tags, metrics)
}

/// Every Kubernetes tag of `pod` (its real name, uid and node, never a `$(` reference), its
/// owner's tags and the extra tags are on the run.
fn assert_tagged_with_its_pod(
    tags: &BTreeMap<String, String>,
    pod: &Value,
    owner: &[(&str, &str)],
    extra: &[(&str, &str)],
) {
    let meta = &pod["metadata"];
    let ns = meta["namespace"].as_str().unwrap();
    let binding = format!("{ns}/train");
    let mut want = vec![
        ("k8s.namespace.name", ns),
        ("k8s.pod.name", meta["name"].as_str().unwrap()),
        ("k8s.pod.uid", meta["uid"].as_str().unwrap()),
        ("k8s.node.name", pod["spec"]["nodeName"].as_str().unwrap()),
        ("k8s.container.name", "train"),
        ("container.image.name", TRAINING_IMAGE),
        ("mlflow-operator.binding", binding.as_str()),
    ];
    want.extend_from_slice(owner);
    want.extend_from_slice(extra);
    for (key, value) in want {
        let got = tags.get(key).map(String::as_str);
        assert_eq!(got, Some(value), "tag {key}: {tags:#?}");
    }
    let ours = |k: &str| k.starts_with("k8s.") || k.starts_with("container.");
    let unexpanded: Vec<_> = tags
        .iter()
        .filter(|(k, v)| ours(k) && v.contains("$("))
        .collect();
    assert!(
        unexpanded.is_empty(),
        "unexpanded references: {unexpanded:?}"
    );
}

/// The run has system metrics under its pod's name (`system/<pod>/...`); returns the name.
fn assert_system_metrics_of(metrics: &[String], pod: &Value) -> String {
    let name = pod["metadata"]["name"].as_str().unwrap().to_string();
    let prefix = format!("system/{name}/");
    let system: Vec<_> = metrics
        .iter()
        .filter(|m| m.starts_with("system/"))
        .collect();
    let cpu = |m: &&String| m.starts_with(&prefix) && m.ends_with("cpu_utilization_percentage");
    assert!(
        system.iter().any(cpu),
        "system metrics under {prefix}: {system:?}"
    );
    assert!(system.iter().all(|m| m.starts_with(&prefix)), "{system:?}");
    name
}

/// A team namespace and a fresh experiment name for one case.
async fn team(sh: &Shared, case: &str) -> (String, String) {
    let ns = team_namespace(sh, case).await;
    (ns, format!("fraud-{case}-{}", random_suffix()))
}

/// The team's application, federated with the namespace's `trainer` ServiceAccount, as a
/// binding's identity.
fn federated_team_identity(sh: &Shared, ns: &str) -> Value {
    let federated = Credential::Federated(vec![trainer_subject(ns)]);
    sh.cloud.register_app(TENANT, TEAM_CLIENT, federated);
    json!({"workloadIdentity": {"clientId": TEAM_CLIENT, "tenantId": TENANT}})
}

/// A service principal registered with the secret `registered`, whose Secret `sp-creds` in the
/// namespace holds `in_secret`, as a binding's identity.
async fn secret_identity(
    sh: &Shared,
    ns: &str,
    client_id: &str,
    registered: &str,
    in_secret: &str,
) -> Value {
    let secret = Credential::Secret(registered.to_string());
    sh.cloud.register_app(TENANT, client_id, secret);
    create_secret(sh, ns, "sp-creds", &[("clientSecret", in_secret)]).await;
    json!({"servicePrincipal": {
        "clientId": client_id, "tenantId": TENANT,
        "clientSecretRef": {"name": "sp-creds", "key": "clientSecret"},
    }})
}

/// A Job under a binding with `identity` fails with Entra ID's `code`, Entra ID refused the
/// exchange `refused` picks, and nothing reached the workspace.
async fn refused_by_entra(
    sh: &Shared,
    (ns, experiment): (&str, &str),
    identity: Value,
    code: &str,
    refused: impl Fn(&Exchange) -> bool,
) {
    azureml_binding(sh, ns, experiment, identity).await;
    plain_job(ns, "train").await;
    let log = failed(sh, ns, "job-name=train").await;
    assert!(
        log.contains(code),
        "the pod must fail with Entra ID's refusal {code}:\n{log}"
    );
    let exchanges = sh.cloud.exchanges();
    assert!(
        exchanges.iter().any(|e| e.status == 401 && refused(e)),
        "Entra ID must have refused the exchange: {exchanges:#?}"
    );
    let rest = Rest::local(&sh.server);
    assert!(
        rest.experiment_id(experiment).await.is_none(),
        "nothing may reach the workspace without a token"
    );
}

/// Entra ID exchanged the `trainer` ServiceAccount's token for the team's application.
fn assert_team_exchanged(sh: &Shared, ns: &str) {
    let subject = trainer_subject(ns);
    assert_exchanged(sh, "entra", TEAM_CLIENT, "federated", Some(&subject));
}

async fn create_secret(sh: &Shared, ns: &str, name: &str, data: &[(&str, &str)]) {
    let secrets: Api<Secret> = Api::namespaced(sh.client.clone(), ns);
    let string_data: BTreeMap<&str, &str> = data.iter().copied().collect();
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name},
        "stringData": string_data,
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

/// Applies binding `train` with `spec` and waits until it is Ready; returns its tracking URI.
async fn apply_binding(sh: &Shared, ns: &str, spec: Value) -> String {
    let binding = json!({
        "apiVersion": "mlflow-operator.io/v1alpha1",
        "kind": "MlflowWorkspaceBinding",
        "metadata": {"name": "train", "namespace": ns},
        "spec": spec,
    });
    kubectl(&["apply", "-f", "-"], &binding.to_string()).await;
    let api: Api<MlflowWorkspaceBinding> = Api::namespaced(sh.client.clone(), ns);
    eventually_ok(
        &format!("binding {ns}/train to be Ready"),
        2 * MINUTE,
        || async {
            let b = api.get("train").await.map_err(|e| e.to_string())?;
            let status = serde_json::to_value(&b.status).unwrap();
            let ready = status["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            match status["trackingUri"].as_str() {
                Some(uri) if ready => Ok(uri.to_string()),
                _ => Err(format!("status: {status}")),
            }
        },
    )
    .await
}

/// An azureML binding of the fake workspace; `identity` null: none.
async fn azureml_binding(sh: &Shared, ns: &str, experiment: &str, identity: Value) -> String {
    apply_binding(sh, ns, azureml_spec(experiment, identity)).await
}

/// The spec of a binding to the suite's workspace with `identity` (null: none).
fn azureml_spec(experiment: &str, identity: Value) -> Value {
    let mut spec = json!({
        "azureML": {
            "subscriptionId": SUBSCRIPTION,
            "resourceGroup": RESOURCE_GROUP,
            "workspaceName": WORKSPACE,
        },
        "experimentName": experiment,
    });
    if !identity.is_null() {
        spec["identity"] = identity;
    }
    spec
}

/// A Job `name` with one plain training container, labelled and nothing else.
async fn plain_job(ns: &str, name: &str) {
    create_job(
        ns,
        name,
        json!({}),
        json!({}),
        container(json!(null), json!([])),
    )
    .await;
}

/// An azureML binding with `identity`, and a plain Job whose run reaches the MLflow server in
/// `experiment`; returns the run.
async fn logged_through_azure_ml(
    sh: &Shared,
    ns: &str,
    experiment: &str,
    identity: Value,
) -> Value {
    azureml_binding(sh, ns, experiment, identity).await;
    plain_job(ns, "train").await;
    let run = trained(sh, ns, "job-name=train").await;
    Rest::local(&sh.server).assert_run(&run, experiment).await;
    run
}

async fn create_job(ns: &str, name: &str, labels: Value, annotations: Value, container: Value) {
    let mut all_labels = json!({TRACK: "true"});
    for (k, v) in labels.as_object().into_iter().flatten() {
        all_labels[k] = v.clone();
    }
    let job = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": 600,
            "template": {
                "metadata": {"labels": all_labels, "annotations": annotations},
                "spec": pod_spec("trainer", "Never", container),
            },
        },
    });
    kubectl(&["apply", "-f", "-"], &job.to_string()).await;
}

async fn job_pod(sh: &Shared, ns: &str, job: &str) -> Value {
    let pods: Api<Pod> = Api::namespaced(sh.client.clone(), ns);
    let list = pods_when(
        &pods,
        &format!("job-name={job}"),
        "the Job's pod",
        MINUTE,
        |ps| !ps.is_empty(),
    )
    .await;
    serde_json::to_value(&list[0]).unwrap()
}

/// Waits for the pod matching `selector` to print train.py's result line; returns it. Fails
/// with the pod's log when the pod fails or the deadline passes.
async fn trained(sh: &Shared, ns: &str, selector: &str) -> Value {
    trained_within(&sh.client, ns, selector, 6 * MINUTE).await
}

/// MSAL (service principals) read the tenant's OpenID configuration before its token request.
fn assert_msal_discovered_the_tenant(sh: &Shared) {
    let log = sh.cloud.request_log();
    let wanted =
        format!("GET login.microsoftonline.com/{TENANT}/v2.0/.well-known/openid-configuration 200");
    assert!(log.contains(&wanted), "{wanted} missing from {log:#?}");
}

/// Waits for the pod matching `selector` to fail; returns its log.
async fn failed(sh: &Shared, ns: &str, selector: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(sh.client.clone(), ns);
    let what = format!("a pod matching {selector} in {ns} to fail");
    eventually_ok(&what, 6 * MINUTE, || async {
        let (pod, name, phase, log) = first_pod(&pods, selector).await?;
        match phase.as_str() {
            "Failed" => Ok(log),
            "Succeeded" => panic!("pod {name} was expected to fail but succeeded:\n{log}"),
            _ => Err(format!("pod {name} is {phase}{}", waiting(&pod))),
        }
    })
    .await
}

fn assert_exchanged(sh: &Shared, service: &str, client_id: &str, via: &str, subject: Option<&str>) {
    let exchanges = sh.cloud.exchanges();
    assert!(
        exchanges.iter().any(|e| e.service == service
            && e.client_id == client_id
            && e.via == via
            && e.status == 200
            && e.tenant == TENANT
            && (subject.is_none() || e.subject.as_deref() == subject)),
        "{service} must have issued a token to {client_id} via {via} (subject {subject:?}); it saw: {exchanges:#?}"
    );
}

/// The front door served this run's requests to the given caller, including its artifact
/// metadata (the upload URL).
fn assert_front_door_saw(sh: &Shared, run: &Value, client_id: &str, via: &str) {
    let run_id = run["run_id"].as_str().unwrap();
    let calls = sh.cloud.calls();
    let ours: Vec<_> = calls
        .iter()
        .filter(|c| c.service == "aml" && c.client_id.as_deref() == Some(client_id))
        .collect();
    assert!(
        ours.iter().all(|c| c.via.as_deref() == Some(via)),
        "{ours:#?}"
    );
    assert!(
        ours.iter().any(|c| c.status == 200
            && c.path
                .contains(&format!("/runs/{run_id}/artifacts/batch/metadata"))),
        "the front door must have given {client_id} an upload URL for run {run_id}; it saw: {ours:#?}"
    );
    let log = sh.cloud.request_log();
    assert!(
        log.iter().any(|l| l.starts_with("PUT ")
            && l.contains(&format!("/{run_id}/artifacts/model.txt"))
            && l.contains(" 201 ")),
        "the SAS upload of model.txt for run {run_id} must have reached the artifact store: {log:#?}"
    );
}

// ---------------------------------------------------------------- MLflow servers

/// Waits for the Ready pod of `app=mlflow` in `ns`; the REST API through its pod address with
/// the Host header clients use.
async fn server_rest(sh: &Shared, ns: &str, auth: Option<(&str, &str)>) -> Rest {
    let pods: Api<Pod> = Api::namespaced(sh.client.clone(), ns);
    let what = format!("the MLflow server in {ns} Ready");
    let pod = eventually_ok(&what, 3 * MINUTE, || async {
        let list = pods
            .list(&kube::api::ListParams::default().labels("app=mlflow"))
            .await
            .map_err(|e| e.to_string())?;
        let pod = list.items.first().ok_or("no pod yet")?.clone();
        if list.items.len() == 1 && is_ready(&pod) {
            return Ok(pod);
        }
        // Say why: the server's own log, or its previous container's when it restarted.
        let name = pod.metadata.name.clone().unwrap();
        let mut log = pods
            .logs(&name, &LogParams::default())
            .await
            .unwrap_or_default();
        if log.trim().is_empty() {
            let previous = LogParams {
                previous: true,
                ..Default::default()
            };
            log = pods.logs(&name, &previous).await.unwrap_or_default();
        }
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        Err(format!(
            "pod {name} not Ready; its log, last line first:\n{}",
            tail.join("\n")
        ))
    })
    .await;
    let ip = pod.status.unwrap().pod_ip.unwrap();
    Rest {
        base: format!("http://{ip}:5000"),
        host: Some(format!("mlflow.{ns}.svc.cluster.local:5000")),
        auth: auth.map(|(u, p)| (u.to_string(), p.to_string())),
    }
}

/// An in-cluster `mlflow server --app-name basic-auth` (the example image) behind Service
/// `mlflow`, whose admin is the Secret's user.
async fn in_cluster_server(sh: &Shared, ns: &str, admin: Option<(&str, &str)>) -> Rest {
    let (user, password) = admin.unwrap();
    let ini = format!(
        "[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:////data/basic_auth.db\n\
         admin_username = {user}\nadmin_password = {password}\n\
         authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    );
    create_secret(sh, ns, "mlflow-auth-config", &[("basic_auth.ini", &ini)]).await;
    let manifest = json!({
        "apiVersion": "v1", "kind": "List",
        "items": [
            {
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "mlflow", "namespace": ns},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": "mlflow"}},
                    "template": {
                        "metadata": {"labels": {"app": "mlflow"}},
                        "spec": {
                            "containers": [{
                                "name": "mlflow",
                                "image": TRAINING_IMAGE,
                                "imagePullPolicy": "Never",
                                "command": [
                                    "mlflow", "server", "--host=0.0.0.0", "--port=5000", "--workers=1",
                                    "--backend-store-uri=sqlite:////data/mlflow.db",
                                    "--artifacts-destination=/data/artifacts", "--serve-artifacts",
                                    "--app-name=basic-auth",
                                    format!("--allowed-hosts=mlflow.{ns}.svc.cluster.local:5000,mlflow.{ns}.svc:5000,localhost:5000"),
                                ],
                                "env": [
                                    {"name": "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "value": "false"},
                                    {"name": "MLFLOW_AUTH_CONFIG_PATH", "value": "/etc/mlflow-auth/basic_auth.ini"},
                                    {"name": "MLFLOW_FLASK_SERVER_SECRET_KEY", "value": "mlflow-operator-node-test"},
                                ],
                                "ports": [{"name": "http", "containerPort": 5000}],
                                "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 2},
                                "volumeMounts": [
                                    {"name": "data", "mountPath": "/data"},
                                    {"name": "auth", "mountPath": "/etc/mlflow-auth", "readOnly": true},
                                ],
                            }],
                            "volumes": [
                                {"name": "data", "emptyDir": {}},
                                {"name": "auth", "secret": {"secretName": "mlflow-auth-config"}},
                            ],
                        },
                    },
                },
            },
            {
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "mlflow", "namespace": ns},
                "spec": {"selector": {"app": "mlflow"}, "ports": [{"name": "http", "port": 5000, "targetPort": "http"}]},
            },
        ],
    });
    kubectl(&["apply", "-f", "-"], &manifest.to_string()).await;
    let rest = server_rest(sh, ns, admin).await;
    answering(rest, "the basic-auth MLflow server").await
}

/// `rest` once its server answers: the port opens before the app does.
async fn answering(rest: Rest, what: &str) -> Rest {
    let default = [("experiment_name", "Default")];
    eventually_ok(&format!("{what} to answer"), 2 * MINUTE, || async {
        let (status, body) = rest
            .get("/api/2.0/mlflow/experiments/get-by-name", &default)
            .await;
        (status == 200)
            .then_some(())
            .ok_or(format!("{status} {body}"))
    })
    .await;
    rest
}

/// examples/mlflow-server.yaml applied as a user would: a plain server in namespace `mlflow`.
async fn example_server(sh: &Shared) -> Rest {
    // Applied once: two cases applying it side by side race to create the same objects.
    static APPLIED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    APPLIED
        .get_or_init(|| async {
            SUITE.remember("mlflow");
            let manifest = std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/examples/mlflow-server.yaml"
            ))
            .unwrap();
            kubectl(&["apply", "-f", "-"], &manifest).await;
        })
        .await;
    let rest = server_rest(sh, "mlflow", None).await;
    answering(rest, "the example MLflow server").await
}
