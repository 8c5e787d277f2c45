//! An upgrade that loses nothing, on the real node. The previous release is the chart and image
//! of the commit `PREVIOUS_RELEASE` names in `tests/cluster/versions.env` (main before the CRD
//! gained `status.pods` and the run tags; `tests/cluster/images/build previous` builds its image
//! from that commit's own Dockerfile). It is installed as a user did, with its own CRD; bindings
//! and labelled pods are created; `helm upgrade` to this release runs under the admission load of
//! the fault tests, then `helm rollback` under the same load.
//!
//! Shown: no admission failed in either; with `crds.upgrade=false` the rollout waits, the previous
//! pods serving and the new one saying what the CRD lacks; with the default, the new operator
//! upgraded the CRD to its revision (Helm does not), every binding kept with every field, and the
//! new fields kept right after the upgrade; the rollback runs on, and does not lower, the later
//! CRD.

use mlflow_operator_test_support as common;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, LogParams, PostParams};
use kube::{Api, Client};
use mlflow_operator::crd;
use serde_json::{Value, json};

use common::helm::helm_ok as helm;
use common::node::{
    BUSYBOX, MINUTE, RELEASE, RELEASE_NS, SELECTOR, TRACK, Tally, admission_load,
    after_more_attempts, install_args, is_ready, is_running, namespace_gone,
    remove_leftover_release,
};
use common::{client, ensure_crd, eventually, kubectl, random_suffix};

/// This release's image, as `tests/cluster/images/load operator` imports it.
const CURRENT_IMAGE: &str = concat!("mlflow-operator:", env!("CARGO_PKG_VERSION"));

/// The previous release's commit: `PREVIOUS_RELEASE` in `tests/cluster/versions.env`, which
/// `tests/cluster/images/build previous` builds too.
fn previous_release() -> String {
    include_str!("cluster/versions.env")
        .lines()
        .find_map(|l| l.strip_prefix("PREVIOUS_RELEASE="))
        .expect("PREVIOUS_RELEASE in tests/cluster/versions.env")
        .trim()
        .to_string()
}

/// Uninstalls the release and deletes the test's namespaces on drop, also when the test panics.
struct Cleanup {
    namespaces: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        common::node::uninstall_release(RELEASE, RELEASE_NS, &self.namespaces);
    }
}

#[tokio::test]
async fn upgrade_from_the_previous_release_and_rollback_lose_nothing() {
    let client = client().await;
    let commit = previous_release();
    let team = format!("upgrade-team-{}", random_suffix());
    let _cleanup = Cleanup {
        namespaces: vec![team.clone()],
    };
    let previous_image = format!("mlflow-operator:{}", &commit[..12]);
    let chart = previous_chart(&commit);
    install_previous(&client, &chart, &previous_image).await;
    let before = create_bindings_and_pods(&client, &team).await;

    let tally = under_load(&client, &team, async {
        helm(&upgrade_args(&["--set", "crds.upgrade=false"])).await;
        rollout_waits_on_the_crd(&client).await;
        helm(&upgrade_args(&[])).await;
        rolled_out_to(&client, CURRENT_IMAGE).await;
    })
    .await;
    report_and_assert_none_failed("upgrade", &tally);
    crd_at_revision(&client, crd::REVISION).await;
    bindings_kept(&client, &team, &before).await;
    new_fields_usable(&client, &team).await;

    let tally = under_load(&client, &team, async {
        helm(&["rollback", RELEASE, "1", "-n", RELEASE_NS]).await;
        rolled_out_to(&client, &previous_image).await;
    })
    .await;
    report_and_assert_none_failed("rollback", &tally);
    crd_at_revision(&client, crd::REVISION).await;
    let kept = binding(&client, &team, "fraud").await;
    assert_eq!(
        kept["spec"]["runTags"]["extra"]["team"], "fraud",
        "{kept:#}"
    );
    ensure_crd(&client).await;
}

/// The previous release's chart, from its commit (`git archive`), in a directory of its own.
fn previous_chart(commit: &str) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("mlflow-operator-previous-{}", random_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let tarball = dir.join("chart.tar");
    let run = |program: &str, args: &[&str]| {
        let out = std::process::Command::new(program)
            .current_dir(repo)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?}: {} (a full clone of main has the commit {commit})",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let output = format!("--output={}", tarball.display());
    run(
        "git",
        &["archive", &output, commit, "charts/mlflow-operator"],
    );
    run(
        "tar",
        &[
            "-xf",
            tarball.to_str().unwrap(),
            "-C",
            dir.to_str().unwrap(),
        ],
    );
    dir.join("charts/mlflow-operator")
}

/// The previous release installed as a user did: its CRD from its chart's crds/ (so the
/// cluster's CRD is deleted first), its image, two Ready operator pods.
async fn install_previous(client: &Client, chart: &Path, image: &str) {
    remove_leftover_release(client, RELEASE, RELEASE_NS).await;
    kubectl(
        &[
            "delete",
            "crd",
            &crd::name(),
            "--ignore-not-found",
            "--wait",
        ],
        "",
    )
    .await;
    let tag = format!("image.tag={}", image.rsplit(':').next().unwrap());
    let mut args = install_args(&["--set", &tag]);
    args[2] = chart.to_str().unwrap();
    helm(&args).await;
    rolled_out_to(client, image).await;
    crd_at_revision(client, 0).await;
}

fn upgrade_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = install_args(extra);
    args[0] = "upgrade";
    args
}

/// Creates the team namespace, a binding with every field the previous CRD has a use for, one in
/// another namespace that cannot resolve (its status is a failure), and three labelled pods;
/// returns the bindings as the API server holds them once the previous controller wrote both.
async fn create_bindings_and_pods(client: &Client, team: &str) -> Vec<Value> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespace_gone(client, team).await;
    let ns = serde_json::from_value(json!({"metadata": {"name": team}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let manifest = format!(
        r#"
apiVersion: mlflow-operator.io/v1alpha1
kind: MlflowWorkspaceBinding
metadata: {{name: fraud, namespace: {team}}}
spec:
  trackingUri: http://mlflow.example.invalid:5000
  registryUri: http://registry.example.invalid:5000
  experimentName: fraud-detection
  env:
    - {{name: MLFLOW_HTTP_REQUEST_TIMEOUT, value: "30"}}
    - {{name: TEAM, value: fraud}}
"#
    );
    kubectl(&["apply", "-f", "-"], &manifest).await;
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), team);
    eventually("the team's default ServiceAccount", MINUTE, || async {
        sas.get_opt("default").await.ok().flatten()
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), team);
    let pod = || -> Pod {
        serde_json::from_value(json!({
            "metadata": {"generateName": "before-", "labels": {TRACK: "true"}},
            "spec": {
                "schedulingGates": [{"name": "mlflow-operator.io/never-scheduled"}],
                "containers": [{"name": "c", "image": BUSYBOX}]
            }
        }))
        .unwrap()
    };
    let before = binding_when(client, team, "fraud", "Ready with its URI", |b| {
        b["status"]["trackingUri"] == "http://mlflow.example.invalid:5000"
    })
    .await;
    // The first waits for kube-proxy to route the fresh release's Service.
    for _ in 0..3 {
        let created = eventually("a labelled pod admitted", MINUTE, || async {
            pods.create(&PostParams::default(), &pod()).await.ok()
        })
        .await;
        let env = serde_json::to_value(&created.spec.unwrap().containers[0].env).unwrap();
        assert!(env.to_string().contains("MLFLOW_TRACKING_URI"), "{env}");
    }
    vec![before]
}

async fn binding(client: &Client, ns: &str, name: &str) -> Value {
    binding_when(client, ns, name, "to exist", |_| true).await
}

async fn binding_when(
    client: &Client,
    ns: &str,
    name: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &kube::discovery::ApiResource::erase::<mlflow_operator::binding::MlflowWorkspaceBinding>(
            &(),
        ),
    );
    eventually(
        &format!("binding {ns}/{name} {what}"),
        2 * MINUTE,
        || async {
            let b = serde_json::to_value(api.get(name).await.ok()?).ok()?;
            check(&b).then_some(b)
        },
    )
    .await
}

/// Runs `step` while labelled pods are created, 20 before and 20 after it; what they met.
async fn under_load(client: &Client, team: &str, step: impl Future<Output = ()>) -> Tally {
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let (tally, load) = admission_load(client.clone(), team, "default", stop);
    after_more_attempts(&tally, 20, MINUTE).await;
    step.await;
    after_more_attempts(&tally, 20, MINUTE).await;
    stop_tx.send(true).unwrap();
    load.await.unwrap();
    std::sync::Arc::try_unwrap(tally).expect("the load has stopped")
}

fn report_and_assert_none_failed(what: &str, tally: &Tally) {
    let errors = tally.errors.lock().unwrap().clone();
    println!(
        "{what}: {} labelled pods tried, {} injected, {} not injected, {} failed at admission",
        tally.attempts(),
        tally.injected.load(Ordering::SeqCst),
        tally.not_injected.load(Ordering::SeqCst),
        errors.len()
    );
    assert_eq!(tally.not_injected.load(Ordering::SeqCst), 0, "{what}");
    assert!(
        errors.is_empty(),
        "admissions failed during the {what}: {errors:#?}"
    );
}

/// The Deployment rolled out to `image`: two Ready pods of it, no other.
async fn rolled_out_to(client: &Client, image: &str) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), RELEASE_NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), RELEASE_NS);
    eventually(
        &format!("the operator rolled out to {image}"),
        3 * MINUTE,
        || async {
            let d = deployments.get("mlflow-operator").await.ok()?;
            let s = d.status?;
            let done = s.observed_generation >= d.metadata.generation
                && s.updated_replicas == Some(2)
                && s.ready_replicas == Some(2)
                && s.replicas == Some(2);
            let list = pods
                .list(&ListParams::default().labels(SELECTOR))
                .await
                .ok()?;
            let of_image = |p: &Pod| {
                p.spec
                    .as_ref()
                    .is_some_and(|s| s.containers[0].image.as_deref() == Some(image))
            };
            let up =
                |p: &Pod| is_running(p) && is_ready(p) && p.metadata.deletion_timestamp.is_none();
            let pods_done =
                list.items.len() == 2 && list.items.iter().all(|p| of_image(p) && up(p));
            (done && pods_done).then_some(())
        },
    )
    .await;
}

/// With `crds.upgrade=false` the new release's first pod stays not ready, saying in its log what
/// the CRD lacks, while the previous release's two pods go on serving; the CRD is untouched.
async fn rollout_waits_on_the_crd(client: &Client) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), RELEASE_NS);
    let of = |p: &Pod, image: &str| {
        p.spec
            .as_ref()
            .is_some_and(|s| s.containers[0].image.as_deref() == Some(image))
    };
    let new = eventually(
        "a new pod that says the CRD lacks fields",
        2 * MINUTE,
        || async {
            let list = pods
                .list(&ListParams::default().labels(SELECTOR))
                .await
                .ok()?;
            let new = list
                .items
                .iter()
                .find(|p| of(p, CURRENT_IMAGE) && is_running(p))?;
            let name = new.metadata.name.clone()?;
            let log = pods.logs(&name, &LogParams::default()).await.ok()?;
            log.contains("lacks fields this release writes")
                .then(|| new.clone())
        },
    )
    .await;
    let list = pods
        .list(&ListParams::default().labels(SELECTOR))
        .await
        .unwrap();
    let serving = list
        .items
        .iter()
        .filter(|p| !of(p, CURRENT_IMAGE) && is_ready(p));
    assert_eq!(
        serving.count(),
        2,
        "the previous release's pods serve meanwhile"
    );
    let new = pods
        .get(new.metadata.name.as_deref().unwrap())
        .await
        .unwrap();
    assert!(!is_ready(&new), "a pod on an earlier CRD is not ready");
    crd_at_revision(client, 0).await;
}

async fn crd_at_revision(client: &Client, revision: u32) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd::name();
    eventually(
        &format!("the CRD at revision {revision}"),
        MINUTE,
        || async {
            let live = crds.get(&name).await.ok()?;
            (crd::revision(&live) == revision).then_some(())
        },
    )
    .await;
}

/// Every binding as it was: the whole spec, and the status the previous controller wrote.
async fn bindings_kept(client: &Client, team: &str, before: &[Value]) {
    for old in before {
        let name = old["metadata"]["name"].as_str().unwrap();
        let now = binding(client, team, name).await;
        assert_eq!(
            now["spec"], old["spec"],
            "binding {name}'s spec after the upgrade"
        );
        assert_eq!(now["status"]["trackingUri"], old["status"]["trackingUri"]);
        assert_eq!(now["metadata"]["uid"], old["metadata"]["uid"]);
    }
}

/// Right after the upgrade the new fields are kept: a run tag set on the binding stays, and the
/// new controller writes `status.pods` (the previous CRD would prune both).
async fn new_fields_usable(client: &Client, team: &str) {
    let patch = json!({"spec": {"runTags": {"extra": {"team": "fraud"}}}});
    kubectl(
        &[
            "patch",
            "mwb",
            "fraud",
            "-n",
            team,
            "--type=merge",
            "-p",
            &patch.to_string(),
        ],
        "",
    )
    .await;
    let b = binding(client, team, "fraud").await;
    assert_eq!(b["spec"]["runTags"]["extra"]["team"], "fraud", "{b:#}");
    let b = binding_when(client, team, "fraud", "with status.pods", |b| {
        b["status"]["pods"]["summary"].is_string()
    })
    .await;
    println!("after the upgrade: status.pods = {}", b["status"]["pods"]);
}
