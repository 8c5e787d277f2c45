//! The operator on an earlier CRD, as `mlflow-operator run` processes against the real API server:
//! the CRD of the previous release (`tests/fixtures/crd-revision-0.yaml`, without `status.pods`
//! or the run tags) put back in place of this release's, keeping the bindings.
//!
//! Without `--upgrade-crd` the operator says what the CRD lacks in its log, its `/readyz` answer
//! and `check`, does not lead or reconcile, and starts once someone applies this release's CRD.
//! With it, the operator upgrades the CRD at start and the new fields are kept at once.
//!
//! The CRD is the cluster's: its own test binary, so no other test runs meanwhile.

use mlflow_operator_test_support as common;

use std::time::Duration;

use common::operator::{OperatorProcess, binary};
use common::{ensure_crd, eventually, random_suffix, with_temp_ns};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use mlflow_operator::binding::MlflowWorkspaceBinding;
use mlflow_operator::crd;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);
const URI: &str = "http://mlflow.mlflow.svc:5000";

#[tokio::test]
async fn an_operator_on_an_earlier_crd_says_so_waits_and_upgrades_it_when_allowed() {
    with_temp_ns("crd-upgrade", |client, ns| async move {
        ensure_crd(&client).await;
        create_binding(&client, &ns).await;
        put_back_revision_0(&client).await;

        let checking = start(&ns, "checking", &[]);
        let why = readyz_when(&checking, |s, body| {
            s == 503 && body.contains("lacks fields")
        })
        .await;
        for part in [
            "revision 0",
            "status.pods",
            "spec.runTags",
            "crds.upgrade=true",
            crd::APPLY,
        ] {
            assert!(why.contains(part), "{part} not in /readyz's answer: {why}");
        }
        assert!(
            checking
                .output()
                .contains("the CRD cannot serve this release")
        );
        assert_eq!(checking.is_leader().await, Some(false));
        assert_eq!(
            checking.metric("mlflow_operator_reconciles_total").await,
            Some(0.0)
        );
        let item = check_crd_item(&ns).await;
        assert_eq!(item["mark"], "fail", "{item:#}");
        assert!(
            item["fix"].as_str().unwrap().contains("crds.upgrade=true"),
            "{item:#}"
        );

        // Applied by hand: taken up without a restart.
        ensure_crd(&client).await;
        readyz_when(&checking, |s, _| s == 200).await;
        resolved(&client, &ns).await;
        assert!(checking.output().contains("now has every field"));
        drop(checking);

        put_back_revision_0(&client).await;
        let upgrading = start(&ns, "upgrading", &["--upgrade-crd"]);
        readyz_when(&upgrading, |s, _| s == 200).await;
        let live = Api::<CustomResourceDefinition>::all(client.clone())
            .get(&crd::name())
            .await
            .unwrap();
        assert_eq!(crd::revision(&live), crd::REVISION);
        assert_eq!(crd::judge(Some(&live)), crd::Verdict::Current);
        assert!(
            upgrading.output().contains("upgraded the CRD"),
            "{}",
            upgrading.output()
        );
        run_tags_kept(&client, &ns).await;
        assert_eq!(check_crd_item(&ns).await["mark"], "pass");
    })
    .await;
    // Whatever happened above, the cluster's CRD is this release's again for later tests.
    ensure_crd(&common::client().await).await;
}

/// Replaces the cluster's CRD with the previous release's (a PUT: the bindings stay).
async fn put_back_revision_0(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let live = api.get(&crd::name()).await.unwrap();
    let mut old: CustomResourceDefinition =
        serde_yaml_ng::from_str(include_str!("fixtures/crd-revision-0.yaml")).unwrap();
    old.metadata.resource_version = live.metadata.resource_version;
    api.replace(&crd::name(), &PostParams::default(), &old)
        .await
        .unwrap();
    eventually("the CRD at revision 0", WAIT, || async {
        let live = api.get(&crd::name()).await.ok()?;
        matches!(
            crd::judge(Some(&live)),
            crd::Verdict::Behind { revision: 0, .. }
        )
        .then_some(())
    })
    .await;
}

fn start(ns: &str, identity: &str, more: &[&str]) -> OperatorProcess {
    let lease = format!("--lease-name=lease-{}", random_suffix());
    let mut args = vec![
        "--no-webhook".to_string(),
        format!("--namespace={ns}"),
        format!("--watch-namespace={ns}"),
        lease,
        "--lease-duration=2s".into(),
        format!("--identity={identity}"),
    ];
    args.extend(more.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    OperatorProcess::start(identity, &args)
}

/// `/readyz`'s body once its status and body satisfy `check`.
async fn readyz_when(op: &OperatorProcess, check: impl Fn(u16, &str) -> bool) -> String {
    eventually("/readyz to answer as expected", WAIT, || async {
        let (status, body) = op.get("/readyz").await?;
        check(status, &body).then_some(body)
    })
    .await
}

async fn create_binding(client: &Client, ns: &str) {
    let b: MlflowWorkspaceBinding = serde_json::from_value(json!({
        "apiVersion": "mlflow-operator.io/v1alpha1", "kind": "MlflowWorkspaceBinding",
        "metadata": {"name": "b"},
        "spec": {"trackingUri": URI, "experimentName": "exp"}
    }))
    .unwrap();
    Api::<MlflowWorkspaceBinding>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &b)
        .await
        .unwrap();
}

async fn resolved(client: &Client, ns: &str) {
    let api: Api<MlflowWorkspaceBinding> = Api::namespaced(client.clone(), ns);
    eventually("binding b Ready", WAIT, || async {
        let b = api.get("b").await.ok()?;
        (b.is_ready() && b.status?.tracking_uri.as_deref() == Some(URI)).then_some(())
    })
    .await;
}

/// A run tag set right after the upgrade is kept, and the controller writes `status.pods`.
async fn run_tags_kept(client: &Client, ns: &str) {
    let api: Api<MlflowWorkspaceBinding> = Api::namespaced(client.clone(), ns);
    let patch = json!({"spec": {"runTags": {"extra": {"team": "fraud"}}}});
    api.patch("b", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let b = serde_json::to_value(api.get("b").await.unwrap()).unwrap();
    assert_eq!(b["spec"]["runTags"]["extra"]["team"], "fraud", "{b:#}");
    eventually("status.pods written", WAIT, || async {
        let b = serde_json::to_value(api.get("b").await.ok()?).ok()?;
        b["status"]["pods"]["summary"].is_string().then_some(())
    })
    .await;
}

/// The CRD's item of `mlflow-operator check -o json -n <ns>`.
async fn check_crd_item(ns: &str) -> Value {
    let out = tokio::process::Command::new(binary())
        .args(["check", "-o", "json", "-n", ns])
        .output()
        .await
        .unwrap();
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let name = format!(
        "the CRD {} is installed and has every field of this release",
        crd::name()
    );
    list["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no check {name:?} in {list:#}"))
}
