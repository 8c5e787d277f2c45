//! The versions the chart claims: Kubernetes 1.34 and later (`kubeVersion`), an older or
//! otherwise unfit API server refused by Helm before anything is created, and an upgrade from the
//! chart as an earlier release shipped it.

use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, Client};
use serde_json::{Value, json};

use super::common::helm::{CHART, documents, helm, helm_ok};
use super::common::random_suffix;
use super::release::Release;

/// The oldest Kubernetes the chart claims: what `.ci/run` proves with `K8S_VERSION=v1.34.4`.
const KUBE_VERSION: &str = ">=1.34.0-0";

/// The chart of an earlier release: main at the end of the session before the pod status
/// (issue "See which pods track") added the pod watch and its RBAC.
const PREVIOUS: &str = "f5d179f";

fn chart_yaml(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("Chart.yaml")).expect("Chart.yaml");
    serde_yaml_ng::from_str(&text).expect("Chart.yaml is YAML")
}

#[test]
fn chart_claims_kubernetes_1_34_and_later() {
    assert_eq!(chart_yaml(Path::new(CHART))["kubeVersion"], KUBE_VERSION);
}

#[tokio::test]
async fn helm_refuses_a_kubernetes_older_than_1_34() {
    for (kube, accepted) in [("v1.33.7", false), ("v1.34.0", true), ("v1.37.2", true)] {
        let (ok, _, stderr) = helm(&["template", "m", CHART, "--kube-version", kube]).await;
        assert_eq!(
            ok, accepted,
            "helm template --kube-version {kube}: {stderr}"
        );
        if !accepted {
            assert!(
                stderr.contains("kubeVersion") && stderr.contains("incompatible"),
                "the refusal names the requirement: {stderr}"
            );
        }
    }
}

/// The real API server is older than what a copy of the chart requires: `helm install` refuses
/// with the versions named, and creates nothing (no namespace, no release, no objects).
#[tokio::test]
async fn an_api_server_older_than_the_chart_needs_gets_no_half_installed_release() {
    let client = super::common::client().await;
    let (minor, git_version) = super::common::server_version(&client).await;
    let dir = tempfile::tempdir().unwrap();
    let chart = copy_chart(Path::new(CHART), dir.path());
    let needs = format!(">=1.{}.0-0", minor + 1);
    let yaml = std::fs::read_to_string(chart.join("Chart.yaml")).unwrap();
    let yaml = yaml.replace(
        &format!("kubeVersion: \"{KUBE_VERSION}\""),
        &format!("kubeVersion: \"{needs}\""),
    );
    std::fs::write(chart.join("Chart.yaml"), yaml).unwrap();
    assert_eq!(chart_yaml(&chart)["kubeVersion"], needs.as_str());

    let ns = format!("helm-too-old-{}", random_suffix());
    let args = [
        "install",
        "mlflow-operator",
        chart.to_str().unwrap(),
        "-n",
        &ns,
        "--create-namespace",
    ];
    let (ok, _, stderr) = helm(&args).await;
    assert!(
        !ok,
        "helm installed a chart needing {needs} on Kubernetes {}",
        git_version
    );
    assert!(
        stderr.contains(&needs) && stderr.contains(&git_version),
        "the refusal names the requirement and the server's version: {stderr}"
    );
    let namespaces: Api<Namespace> = Api::all(client.clone());
    assert!(
        namespaces.get_opt(&ns).await.unwrap().is_none(),
        "namespace {ns} was created"
    );
    // `helm list` flags differ between Helm 3 and 4; `status` of a missing release does not.
    let (found, _, stderr) = helm(&["status", "mlflow-operator", "-n", &ns]).await;
    assert!(
        !found && stderr.contains("not found"),
        "a release was recorded: {stderr}"
    );
}

/// `helm upgrade` from the chart as it was at [`PREVIOUS`] to this one: the release ends up with
/// exactly what this chart renders, and uninstalls cleanly.
#[tokio::test]
async fn upgrade_from_the_previous_chart_version_lands_on_this_chart() {
    let client = super::common::client().await;
    let dir = tempfile::tempdir().unwrap();
    let previous = previous_chart(dir.path());
    let suffix = random_suffix();
    let release = Release {
        name: "mlflow-operator".into(),
        namespace: format!("helm-previous-{suffix}"),
    };
    // Scoped to a namespace nobody creates: the upgrade is about the release, not admissions.
    let values = json!({
        "fullnameOverride": format!("mlflow-operator-{suffix}"),
        "webhook": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": format!("nobody-{suffix}")}}}
    });
    let values_file = dir.path().join("values.yaml");
    std::fs::write(&values_file, serde_yaml_ng::to_string(&values).unwrap()).unwrap();
    let (ns, values_file) = (release.namespace.as_str(), values_file.to_str().unwrap());
    let common = ["-n", ns, "-f", values_file];
    helm_ok(
        &[
            &[
                "install",
                "mlflow-operator",
                previous.to_str().unwrap(),
                "--create-namespace",
                // The cluster has this chart's CRD. Helm 3 skips an existing CRD; Helm 4
                // server-side applies the old one and conflicts with its owners.
                "--skip-crds",
            ],
            &common[..],
        ]
        .concat(),
    )
    .await;
    helm_ok(&[&["upgrade", "mlflow-operator", CHART], &common[..]].concat()).await;

    let history: Value = serde_json::from_str(
        &helm_ok(&["history", "mlflow-operator", "-n", ns, "-o", "json"]).await,
    )
    .unwrap();
    let statuses: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["superseded", "deployed"], "{history:#}");
    let installed = sorted(documents(
        &helm_ok(&["get", "manifest", "mlflow-operator", "-n", ns]).await,
    ));
    let rendered = sorted(documents(
        &helm_ok(
            &[
                &["template", "mlflow-operator", CHART, "--skip-tests"],
                &common[..],
            ]
            .concat(),
        )
        .await,
    ));
    assert!(
        installed == rendered,
        "the upgraded release is not what this chart renders"
    );
    assert_deployment_is_this_charts(&client, ns, &rendered).await;

    helm_ok(&["uninstall", "mlflow-operator", "-n", ns, "--wait"]).await;
    let deployments: Api<Deployment> = Api::namespaced(client, ns);
    assert!(
        deployments
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

/// The live Deployment's pod template is the one this chart renders.
async fn assert_deployment_is_this_charts(client: &Client, ns: &str, rendered: &[Value]) {
    let want = rendered
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    let name = want["metadata"]["name"].as_str().unwrap();
    let live = Api::<Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap();
    let live = serde_json::to_value(live.spec.template.spec.unwrap().containers).unwrap();
    assert_eq!(
        live[0]["args"],
        want["spec"]["template"]["spec"]["containers"][0]["args"]
    );
}

/// Every document, in a stable order (helm sorts by kind, not by name).
fn sorted(mut docs: Vec<Value>) -> Vec<Value> {
    docs.sort_by_key(|d| format!("{}/{}", d["kind"], d["metadata"]["name"]));
    docs
}

/// The chart at [`PREVIOUS`], read from the repository's history.
fn previous_chart(into: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "git -C '{}' archive {PREVIOUS} charts/mlflow-operator | tar -x -C '{}'",
            root.display(),
            into.display()
        ))
        .output()
        .expect("git and tar");
    assert!(
        out.status.success(),
        "cannot read the chart at {PREVIOUS} from the repository's history (a full clone is needed): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    into.join("charts/mlflow-operator")
}

/// A copy of the chart to change, in `into`.
fn copy_chart(chart: &Path, into: &Path) -> PathBuf {
    let to = into.join("mlflow-operator");
    let out = std::process::Command::new("cp")
        .arg("-r")
        .arg(chart)
        .arg(&to)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    to
}
