//! Which pods track, on the real node with the real chart: pods that were there before `helm
//! install` count as not injected (owner and fix named) until a rollout restart; a binding
//! change makes its pods stale (condition, Event, metric, `check`) until the next restart; `check`
//! passes on the healthy install and fails, each on its own line, for a binding not Ready, the
//! operator scaled to 0, a caBundle that does not verify, and the CRD missing; `explain` gives
//! the reason for each case the webhook decides.

use mlflow_operator_test_support as common;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use mlflow_operator::binding::{MlflowWorkspaceBinding, PodCounts};
use serde_json::{Value, json};

use common::helm::helm_ok as helm;
use common::node::{
    BUSYBOX, MINUTE, RELEASE, RELEASE_NS, SELECTOR, TRACK, install_args, operators_ready,
    pods_when, remove_leftover_release, uninstall_release,
};
use common::{client, ensure_crd, eventually, kubectl, random_suffix};

const CHECK_PODS: &str = "every opted-in pod carries its binding's current injection";

/// The test's namespaces: a team with its trainer, one for the other explain cases, one the
/// webhook excludes.
struct Namespaces {
    team: String,
    other: String,
    excluded: String,
}

/// Uninstalls the release and deletes the namespaces, also when the test panics.
impl Drop for Namespaces {
    fn drop(&mut self) {
        let all = [&self.team, &self.other, &self.excluded].map(|s| s.to_string());
        uninstall_release(RELEASE, RELEASE_NS, &all);
    }
}

#[tokio::test]
async fn pods_track_or_say_why_and_check_names_every_fault() {
    let client = client().await;
    ensure_crd(&client).await;
    remove_leftover_release(&client, RELEASE, RELEASE_NS).await;
    let suffix = random_suffix();
    let ns = Namespaces {
        team: format!("track-team-{suffix}"),
        other: format!("track-other-{suffix}"),
        excluded: format!("track-excluded-{suffix}"),
    };
    before_the_install(&client, &ns).await;
    let exclude = format!("webhook.excludeNamespaces={{{}}}", ns.excluded);
    helm(&install_args(&["--set", &exclude])).await;
    operators_ready(&client, 2).await;

    not_injected_until_restarted(&client, &ns.team).await;
    stale_after_a_change_until_restarted(&client, &ns.team).await;
    explain_says_why(&client, &ns).await;
    check_fails_for_each_fault(&client, &ns).await;
}

/// The team's binding, a Deployment and a bare pod, all before the operator exists; the other
/// namespaces' objects for `explain`.
async fn before_the_install(client: &Client, ns: &Namespaces) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for name in [&ns.team, &ns.other, &ns.excluded] {
        let labels = json!({"mlflow-operator.io/test": "true"});
        let n = serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}));
        namespaces
            .create(&PostParams::default(), &n.unwrap())
            .await
            .unwrap();
    }
    let team = &ns.team;
    let manifest = format!(
        "{}---\n{}---\n{}",
        binding(team, "fraud", "fraud-v1"),
        deployment(team, "trainer", 1, true),
        pod(team, "notebook")
    );
    kubectl(&["apply", "-f", "-"], &manifest).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), team);
    pods_when(
        &pods,
        &format!("{TRACK}=true"),
        "the team's two pods",
        MINUTE,
        |ps| ps.len() == 2,
    )
    .await;
}

fn binding(ns: &str, name: &str, experiment: &str) -> String {
    format!(
        "apiVersion: mlflow-operator.io/v1alpha1\nkind: MlflowWorkspaceBinding\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{trackingUri: 'http://mlflow.example.invalid:5000', experimentName: {experiment}}}\n"
    )
}

/// A Deployment of busybox; labelled `track: "true"` or not.
fn deployment(ns: &str, name: &str, replicas: u32, labelled: bool) -> String {
    let track = if labelled {
        format!(", {TRACK}: 'true'")
    } else {
        String::new()
    };
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {ns}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}{track}}}}}
    spec:
      terminationGracePeriodSeconds: 0
      containers: [{{name: train, image: {BUSYBOX}, imagePullPolicy: Never, command: [sleep, '3600']}}]
"#
    )
}

fn pod(ns: &str, name: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}, labels: {{app: {name}, {TRACK}: 'true'}}}}
spec:
  terminationGracePeriodSeconds: 0
  containers: [{{name: nb, image: {BUSYBOX}, imagePullPolicy: Never, command: [sleep, '3600']}}]
"#
    )
}

/// Waits until the binding counts `(injected, stale, notInjected)` with PodsCurrent `status`.
async fn counted(
    client: &Client,
    ns: &str,
    name: &str,
    counts: (i64, i64, i64),
    status: &str,
) -> MlflowWorkspaceBinding {
    let api: Api<MlflowWorkspaceBinding> = Api::namespaced(client.clone(), ns);
    let what = format!("binding {ns}/{name} to count {counts:?} with PodsCurrent={status}");
    eventually(&what, 2 * MINUTE, || async {
        let b = api.get(name).await.ok()?;
        let s = b.status.as_ref()?;
        let PodCounts {
            injected,
            stale,
            not_injected,
            ..
        } = s.pods.clone()?;
        let current = s.pods_current()?.status == status;
        ((injected, stale, not_injected) == counts && current).then_some(b)
    })
    .await
}

/// The pods from before the install: not injected, the owners and fixes named on the binding,
/// in the metric and in `check`; `kubectl rollout restart` and a re-created pod make them current.
async fn not_injected_until_restarted(client: &Client, team: &str) {
    let b = counted(client, team, "fraud", (0, 0, 2), "False").await;
    let status = b.status.unwrap();
    let cond = status.pods_current().unwrap();
    assert_eq!(cond.reason, "PodsNotInjected");
    for expected in [
        "Deployment/trainer",
        "Pod/notebook",
        &format!("kubectl rollout restart -n {team} deployment/trainer"),
        &format!("kubectl delete pod -n {team} notebook"),
    ] {
        assert!(cond.message.contains(expected), "{expected}: {cond:#?}");
    }
    assert_eq!(status.pods.unwrap().summary, "0/2");
    assert_eq!(pods_metric(client, team, "notInjected").await, 2.0);
    let list = check(Some(team)).await;
    let pods = item(&list, CHECK_PODS);
    assert_eq!(pods["mark"], "fail", "{pods:#}");
    assert!(
        pods["fix"]
            .as_str()
            .unwrap()
            .contains("kubectl rollout restart"),
        "{pods:#}"
    );
    let trainer = trainer_pod(client, team).await;
    let e = explain(team, &format!("pod/{trainer}")).await;
    assert_eq!(
        (e["tracking"].as_bool(), &e["live"]["state"]),
        (Some(false), &json!("notInjected")),
        "{e:#}"
    );

    restart(client, team).await;
    counted(client, team, "fraud", (2, 0, 0), "True").await;
    assert_eq!(pods_metric(client, team, "injected").await, 2.0);
    let list = check(Some(team)).await;
    assert_eq!(list["status"], 0, "a healthy install passes: {list:#}");
    let e = explain(team, &format!("pod/{}", trainer_pod(client, team).await)).await;
    assert_eq!(
        (e["tracking"].as_bool(), &e["live"]["state"]),
        (Some(true), &json!("injected")),
        "{e:#}"
    );
}

/// `kubectl rollout restart` of the trainer and the notebook deleted and created again; returns
/// once the old pods are gone.
async fn restart(client: &Client, team: &str) {
    let before = trainer_pod(client, team).await;
    kubectl(
        &["rollout", "restart", "-n", team, "deployment/trainer"],
        "",
    )
    .await;
    kubectl(
        &[
            "rollout",
            "status",
            "-n",
            team,
            "deployment/trainer",
            "--timeout=120s",
        ],
        "",
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), team);
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    pods.delete("notebook", &now).await.unwrap();
    eventually("the old notebook pod gone", MINUTE, || async {
        pods.get_opt("notebook").await.ok()?.is_none().then_some(())
    })
    .await;
    kubectl(&["apply", "-f", "-"], &pod(team, "notebook")).await;
    pods_when(
        &pods,
        "app=trainer",
        "the old trainer pod gone",
        2 * MINUTE,
        |ps| ps.len() == 1 && ps[0].metadata.name.as_deref() != Some(&before),
    )
    .await;
}

/// The name of the trainer's one pod (any, while a rollout runs).
async fn trainer_pod(client: &Client, team: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(client.clone(), team);
    let found = pods_when(&pods, "app=trainer", "a trainer pod", MINUTE, |ps| {
        !ps.is_empty()
    })
    .await;
    found[0].metadata.name.clone().unwrap()
}

/// A new experiment name makes both pods stale: condition, a Warning Event, the metric, `check`
/// and `explain` say so; a restart makes them current again, with a Normal Event.
async fn stale_after_a_change_until_restarted(client: &Client, team: &str) {
    kubectl(&["apply", "-f", "-"], &binding(team, "fraud", "fraud-v2")).await;
    let b = counted(client, team, "fraud", (0, 2, 0), "False").await;
    let cond = b.status.as_ref().unwrap().pods_current().unwrap().clone();
    assert_eq!(cond.reason, "PodsStale", "{cond:#?}");
    assert!(cond.message.contains("Deployment/trainer"), "{cond:#?}");
    let warned = events(client, team, "fraud", "PodsStale").await;
    assert_eq!(warned.type_.as_deref(), Some("Warning"), "{warned:#?}");
    assert_eq!(pods_metric(client, team, "stale").await, 2.0);
    let list = check(Some(team)).await;
    assert_eq!(item(&list, CHECK_PODS)["mark"], "fail", "{list:#}");
    assert_ne!(list["status"], 0);
    let e = explain(team, &format!("pod/{}", trainer_pod(client, team).await)).await;
    assert_eq!(
        (e["tracking"].as_bool(), &e["live"]["state"]),
        (Some(false), &json!("stale")),
        "{e:#}"
    );
    assert!(
        e["verdict"].as_str().unwrap().contains("generation 1"),
        "{e:#}"
    );

    restart(client, team).await;
    counted(client, team, "fraud", (2, 0, 0), "True").await;
    let caught_up = events(client, team, "fraud", "PodsCurrent").await;
    assert_eq!(caught_up.type_.as_deref(), Some("Normal"), "{caught_up:#?}");
}

/// The first Event on the binding with `reason`, once there is one.
async fn events(client: &Client, ns: &str, name: &str, reason: &str) -> Event {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    eventually(&format!("a {reason} Event on {name}"), MINUTE, || async {
        let list = api.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                && e.reason.as_deref() == Some(reason)
        })
    })
    .await
}

/// `mlflow_operator_pods{namespace,binding="fraud",state}` as the Lease holder serves it, once
/// it is there.
async fn pods_metric(client: &Client, ns: &str, state: &str) -> f64 {
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), RELEASE_NS);
    let series =
        format!("mlflow_operator_pods{{namespace=\"{ns}\",binding=\"fraud\",state=\"{state}\"}}");
    eventually(&format!("{series} served"), MINUTE, || async {
        let lease = leases.get("mlflow-operator-controller").await.ok()?;
        let holder = lease.spec?.holder_identity?;
        let path = format!("/api/v1/namespaces/{RELEASE_NS}/pods/{holder}:8080/proxy/metrics");
        let req = http::Request::get(path).body(Vec::new()).ok()?;
        let text = client.request_text(req).await.ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
    })
    .await
}

/// `mlflow-operator check -o json` (narrowed to `ns`), with the exit status as `status`.
async fn check(ns: Option<&str>) -> Value {
    let mut args = vec!["check", "-o", "json"];
    if let Some(ns) = ns {
        args.extend(["-n", ns]);
    }
    let (status, out) = cli(&args).await;
    let mut list: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    list["status"] = json!(status);
    list
}

/// The check named `name`.
fn item<'a>(list: &'a Value, name: &str) -> &'a Value {
    list["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name:?}: {list:#}"))
}

/// The checks that failed, by name.
fn failed(list: &Value) -> Vec<String> {
    list["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["mark"] == "fail")
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

async fn explain(ns: &str, object: &str) -> Value {
    let (status, out) = cli(&["explain", "-n", ns, object, "-o", "json"]).await;
    assert_eq!(status, 0, "explain {object}: {out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Runs the CLI with the test's KUBECONFIG; returns its exit status and stdout.
async fn cli(args: &[&str]) -> (i32, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mlflow-operator"))
        .args(args)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code().is_some(), "killed: {stderr}");
    assert!(!stdout.is_empty(), "{args:?} printed nothing: {stderr}");
    (out.status.code().unwrap(), stdout)
}

/// `explain` for each reason the webhook decides on: unlabelled, excluded namespace, no binding,
/// two bindings, a binding not Ready, and (live pods) injected and current.
async fn explain_says_why(client: &Client, ns: &Namespaces) {
    let (team, other, excluded) = (&ns.team, &ns.other, &ns.excluded);
    let manifest = [
        deployment(team, "plain", 0, false),
        deployment(excluded, "trainer", 0, true),
        binding(excluded, "fraud", "fraud-v1"),
        deployment(other, "trainer", 0, true),
    ]
    .join("---\n");
    kubectl(&["apply", "-f", "-"], &manifest).await;
    let says = |e: &Value, tracking: bool, words: &str| {
        assert_eq!(e["tracking"].as_bool(), Some(tracking), "{e:#}");
        let verdict = e["verdict"].as_str().unwrap();
        assert!(verdict.contains(words), "{words:?} in {e:#}");
        if !tracking {
            assert!(e["fix"].is_string(), "a fix: {e:#}");
        }
    };
    says(
        &explain(team, "deployment/plain").await,
        false,
        "is not labelled",
    );
    says(
        &explain(excluded, "deployment/trainer").await,
        false,
        "is excluded",
    );
    says(
        &explain(other, "deployment/trainer").await,
        false,
        "no MlflowWorkspaceBinding",
    );
    says(
        &explain(team, "deployment/trainer").await,
        true,
        "selects deployment/trainer",
    );

    let two = [binding(other, "one", "a"), binding(other, "two", "b")].join("---\n");
    kubectl(&["apply", "-f", "-"], &two).await;
    says(
        &explain(other, "deployment/trainer").await,
        false,
        "2 bindings select",
    );
    let api: Api<MlflowWorkspaceBinding> = Api::namespaced(client.clone(), other);
    for name in ["one", "two"] {
        api.delete(name, &DeleteParams::default()).await.unwrap();
    }
    not_ready_binding(client, other).await;
    says(
        &explain(other, "deployment/trainer").await,
        false,
        "is not Ready",
    );
}

/// An Azure ML binding the operator cannot resolve (it has no Azure identity): Ready False.
async fn not_ready_binding(client: &Client, ns: &str) {
    let manifest = format!(
        "apiVersion: mlflow-operator.io/v1alpha1\nkind: MlflowWorkspaceBinding\nmetadata: {{name: broken, namespace: {ns}}}\nspec:\n  azureML: {{subscriptionId: 3b0c1d2e-4f5a-4b6c-8d7e-9f0a1b2c3d4e, resourceGroup: ml-rg, workspaceName: ml-ws}}\n  identity: {{workloadIdentity: {{tenantId: 72f988bf-86f1-41af-91ab-2d7cd011db47}}}}\n"
    );
    kubectl(&["apply", "-f", "-"], &manifest).await;
    let api: Api<MlflowWorkspaceBinding> = Api::namespaced(client.clone(), ns);
    eventually("binding broken Ready=False", 2 * MINUTE, || async {
        let b = api.get("broken").await.ok()?;
        (b.ready_condition()?.status == "False").then_some(())
    })
    .await;
}

/// Each fault fails its own check: a binding not Ready (the other namespace), the operator
/// scaled to 0, a caBundle of another CA, the CRD missing; the operator scaled back mends the
/// caBundle and the install passes again.
async fn check_fails_for_each_fault(client: &Client, ns: &Namespaces) {
    const READY: &str = "every MlflowWorkspaceBinding is Ready";
    const PODS: &str = "the operator pods are Ready";
    const CA: &str = "the caBundle verifies the certificate the operator serves";
    const CRD: &str = "the CRD mlflowworkspacebindings.mlflow-operator.io is installed and has every field of this release";
    assert_eq!(failed(&check(Some(&ns.other)).await), [READY]);

    scale(client, 0).await;
    let list = check(Some(&ns.team)).await;
    assert!(failed(&list).contains(&PODS.to_string()), "{list:#}");
    assert_eq!(item(&list, CA)["mark"], "pass", "{list:#}");
    let fix = item(&list, PODS)["fix"].as_str().unwrap().to_string();
    assert!(fix.contains("kubectl scale"), "{fix}");

    let other_ca =
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, rcgen_ca_pem());
    let patch =
        json!([{"op": "replace", "path": "/webhooks/0/clientConfig/caBundle", "value": other_ca}]);
    kubectl(
        &[
            "patch",
            "mutatingwebhookconfiguration",
            RELEASE,
            "--type=json",
            "-p",
            &patch.to_string(),
        ],
        "",
    )
    .await;
    let list = check(Some(&ns.team)).await;
    assert_eq!(item(&list, CA)["mark"], "fail", "{list:#}");

    scale(client, 2).await;
    operators_ready(client, 2).await;
    let list = eventually_passes(&ns.team).await;
    assert_eq!(item(&list, CA)["mark"], "pass");

    kubectl(
        &[
            "delete",
            "crd",
            "mlflowworkspacebindings.mlflow-operator.io",
            "--wait",
        ],
        "",
    )
    .await;
    let list = check(Some(&ns.team)).await;
    let crd_failed = failed(&list).contains(&CRD.to_string());
    ensure_crd(client).await;
    assert!(crd_failed, "{list:#}");
}

/// `check -n ns` once it passes (the operator rewrites the caBundle after it starts).
async fn eventually_passes(ns: &str) -> Value {
    eventually("check to pass again", 2 * MINUTE, || async {
        let list = check(Some(ns)).await;
        (list["status"] == 0).then_some(list)
    })
    .await
}

async fn scale(client: &Client, replicas: usize) {
    let n = format!("--replicas={replicas}");
    kubectl(
        &["scale", "-n", RELEASE_NS, "deployment/mlflow-operator", &n],
        "",
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), RELEASE_NS);
    if replicas == 0 {
        pods_when(&pods, SELECTOR, "no operator pod", 2 * MINUTE, |ps| {
            ps.is_empty()
        })
        .await;
    }
}

/// The PEM of a CA that signed nothing the operator serves.
fn rcgen_ca_pem() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&key).unwrap().pem()
}
