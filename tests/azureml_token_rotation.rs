//! Issue 20, item 1, across a kubelet rotation: a training pod with workload identity logs
//! through the Azure ML front door for 12.5 minutes while the kubelet rotates its projected
//! ServiceAccount token and azure-identity reads the file again, with one-minute access tokens
//! (`common::token_renewal`, as `azureml_node`'s five-minute run).
//!
//! The kubelet rotates a projected ServiceAccount token at about 80% of its lifetime. The API
//! server refuses a projected token of under 600 s (and `--service-account-max-token-expiration`
//! cannot go below an hour), and a binding's `tokenExpirationSeconds` is 3600..86400, so the
//! operator's own projection rotates after 48 minutes at the soonest. The run therefore mounts a
//! 600 s projection of its own and points `AZURE_FEDERATED_TOKEN_FILE` at it, which the webhook
//! leaves as the container set it; the kubelet rotates it after about 480 s, and azure-identity
//! reads the file again 600 s after its first read.
//!
//! The run's length is the floor of any binary it is in, so it is a binary of its own that
//! `hack/test` starts before the whole suite and waits for after it (`test = false` in
//! Cargo.toml keeps it out of `cargo test --all-targets`; `--test azureml_token_rotation` runs
//! it). It therefore shares nothing another test process changes or removes:
//!
//! - no Helm release and no binding in the cluster: the Job's pod is planned in this process by
//!   the operator's library, as `mlflow-operator inject` plans it, for an azureML binding held
//!   in memory with the workspace's URI in its status (what the controller resolves through
//!   ARM); the opt-in label is then taken off the pod, so that no webhook another test binary
//!   registers (they select that label, failing closed) ever sees it;
//! - fakes of its own (`FakeCloud::start_on`) on node addresses no other test binds, reached
//!   through the pod's `hostAliases` rather than the cluster's DNS, whose mapping belongs to
//!   `azureml_node` and `node_faults`; no IMDS (workload identity never asks it);
//! - its own namespace, CA ConfigMap and MLflow server, removed at exit.
//!
//! The fake Entra ID holds the API server's keys once read (as Entra ID holds an issuer's), so
//! `node_faults` restarting the API server meanwhile refuses no exchange.
//!
//!   tests/cluster/exec cargo test --test azureml_token_rotation -- --nocapture

use mlflow_operator_test_support as common;

use std::time::Duration;

use kube::Client;
use mlflow_operator::cli::inject::{Offline, load_binding};
use mlflow_operator::inject::{Defaults, OnMissingBinding};
use serde_json::{Value, json};

use common::fake_cloud::{self, Credential, FakeCloud, NodeIps};
use common::mlflow::{MlflowServer, Rest};
use common::node::{self, MINUTE, TRACK};
use common::token_renewal::{EPOCH_SECONDS, Mode, TOKEN_LIFETIME, long_job, outlived_its_tokens};
use common::training::{team_namespace, trained_within, trainer_subject};
use common::{client, kubectl, random_suffix};

/// Addresses on the node no other test binds (`azureml_node` and `node_faults` take .10-.12
/// and IMDS's).
const IPS: NodeIps = NodeIps {
    entra: "10.250.0.13",
    arm: "10.250.0.14",
    aml: "10.250.0.15",
    imds: None,
};
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
/// The training team's application, federated with the namespace's `trainer` ServiceAccount.
const TEAM_CLIENT: &str = "0e7b3c6d-5a4f-4e2b-8c1d-7f6a5b4c3d14";
const SUBSCRIPTION: &str = "3b0c1d2e-4f5a-4b6c-8d7e-9f0a1b2c3d4e";
const RESOURCE_GROUP: &str = "ml-rg";
const WORKSPACE: &str = "ml-ws-rotation";
/// 150 epochs of `EPOCH_SECONDS`, 12.5 minutes, past the first rotation and re-read.
const ROTATION_EPOCHS: u64 = 150;
/// The API server's shortest projected token.
const SHORTEST_PROJECTED_TOKEN: u64 = 600;

/// The fakes and the MLflow server behind the fake front door.
struct Shared {
    client: Client,
    cloud: FakeCloud,
    server: MlflowServer,
}

static SUITE: node::Suite<Shared> = node::Suite::new();

/// Deletes the namespace, prints the fakes' request log and stops the MLflow server; removes
/// no release and leaves the cluster's DNS alone (neither is this process's).
extern "C" fn clean_up_at_exit() {
    let Some(shared) = SUITE.tear_down_namespaces() else {
        return;
    };
    println!("----- fake cloud request log (kubelet rotation) -----");
    for line in shared.cloud.request_log() {
        println!("{line}");
    }
    shared.server.kill();
}

async fn setup() -> Shared {
    let client = client().await;
    let server = MlflowServer::start_serving_artifacts().await;
    let cloud = FakeCloud::start_on(client.clone(), &server.url, &IPS).await;
    cloud.set_token_lifetime(TOKEN_LIFETIME);
    Shared {
        client,
        cloud,
        server,
    }
}

/// Workload identity across a kubelet rotation of its projected token (600 s, its own volume:
/// see the module's comment): every step of a 12.5-minute run lands and Entra ID saw the
/// client present a second, rotated ServiceAccount token, issued before the first expired.
#[test]
fn workload_identity_outlives_a_kubelet_rotation_of_its_projected_token() {
    SUITE.case(setup(), clean_up_at_exit, |sh| async move {
        let mode = workload_identity(sh).await;
        let job = long_job(&mode.ns, ROTATION_EPOCHS, Some(SHORTEST_PROJECTED_TOKEN));
        let job = planned(sh, &mode, job);
        kubectl(&["apply", "-f", "-"], &job.to_string()).await;
        let deadline = Duration::from_secs(ROTATION_EPOCHS * EPOCH_SECONDS) + 5 * MINUTE;
        let run = trained_within(&sh.client, &mode.ns, "job-name=train", deadline).await;
        let rest = Rest::local(&sh.server);
        let figures = outlived_its_tokens(&sh.cloud, &rest, &mode, &run, ROTATION_EPOCHS).await;
        println!("{}: {figures}", mode.name);
        let read = figures.assertions_read;
        assert!(
            read.len() >= 2,
            "the client must have presented the rotated projected token; it presented tokens issued at {read:?}"
        );
        let rotated_after = read[1] - read[0];
        assert!(
            rotated_after < SHORTEST_PROJECTED_TOKEN as i64,
            "the kubelet rotates before expiry: {rotated_after} s"
        );
    });
}

/// A namespace of the team's, whose `trainer` ServiceAccount the team's application is
/// federated with, and the run's experiment.
async fn workload_identity(sh: &Shared) -> Mode {
    let ns = format!("aml-rotation-{}", random_suffix());
    SUITE.remember(&ns);
    team_namespace(&sh.client, &ns, &sh.cloud.ca_pem).await;
    let subject = trainer_subject(&ns);
    let federated = Credential::Federated(vec![subject.clone()]);
    sh.cloud.register_app(TENANT, TEAM_CLIENT, federated);
    Mode {
        name: "workload identity",
        ns,
        experiment: format!("fraud-rotation-{}", random_suffix()),
        service: "entra",
        client_id: TEAM_CLIENT,
        via: "federated",
        subject: Some(subject),
        projected: Some(SHORTEST_PROJECTED_TOKEN),
    }
}

/// `job` with its pod as the webhook would admit it under the team's binding (planned here:
/// see the module's comment), without the opt-in label, and with the host names mapped to this
/// process's fakes.
fn planned(sh: &Shared, mode: &Mode, job: Value) -> Value {
    let binding = binding(sh, mode);
    let defaults = Defaults::new(None, OnMissingBinding::Refuse, |_| None);
    let offline = Offline {
        binding: &binding,
        service_account: None,
        defaults: &defaults,
    };
    let (yaml, warnings) = offline
        .documents(&job.to_string())
        .unwrap_or_else(|e| panic!("the planner refused the Job: {e}"));
    println!("planned in process, warnings {warnings:?}:\n{yaml}");
    let mut job: Value = serde_yaml_ng::from_str(&yaml).expect("the planned Job");
    let template = &mut job["spec"]["template"];
    let uri = binding.status.as_ref().and_then(|s| s.tracking_uri.clone());
    let injected = template["spec"]["containers"][0]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|e| e["name"] == "MLFLOW_TRACKING_URI" && e["value"].as_str() == uri.as_deref());
    assert!(injected, "the planner injected the workspace: {template}");
    let labels = template["metadata"]["labels"].as_object_mut().unwrap();
    labels.remove(TRACK);
    template["spec"]["hostAliases"] = fake_cloud::host_aliases(&IPS);
    job
}

/// The team's azureML binding as `kubectl get mwb -o yaml` would show it once the controller
/// resolved the workspace: its URI (the fake ARM's answer) in the status.
fn binding(sh: &Shared, mode: &Mode) -> mlflow_operator::binding::MlflowWorkspaceBinding {
    let uri = sh
        .cloud
        .add_workspace(SUBSCRIPTION, RESOURCE_GROUP, WORKSPACE);
    let binding = json!({
        "apiVersion": "mlflow-operator.io/v1alpha1",
        "kind": "MlflowWorkspaceBinding",
        "metadata": {"name": "train", "namespace": mode.ns},
        "spec": {
            "azureML": {
                "subscriptionId": SUBSCRIPTION,
                "resourceGroup": RESOURCE_GROUP,
                "workspaceName": WORKSPACE,
            },
            "experimentName": mode.experiment,
            "identity": {"workloadIdentity": {"clientId": TEAM_CLIENT, "tenantId": TENANT}},
        },
        "status": {"trackingUri": uri},
    });
    load_binding(&binding.to_string()).unwrap_or_else(|e| panic!("the binding: {e}"))
}
