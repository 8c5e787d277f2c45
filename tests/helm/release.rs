//! The chart installed on the live API server, and the operator binary run with exactly the
//! Deployment's args and nothing but the chart ServiceAccount's token.

use std::path::PathBuf;
use std::process::Stdio;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::json;

use super::common::helm::{CHART, helm_ok};
use super::common::webhook::ensure_crd;
use super::common::{free_ports, random_suffix};
use super::privileges::assert_pss_restricted;

/// The chart installed in its own namespace, scoped to one test namespace, and the operator
/// running for it on this host.
pub struct Installed {
    pub client: Client,
    /// Where the webhook applies and bindings are made.
    pub test_ns: String,
    pub release_ns: String,
    /// The name of the chart's objects.
    pub fullname: String,
    /// The operator's command line.
    pub args: Vec<String>,
    pub metrics_port: u16,
    pub operator: Option<Operator>,
    _release: Release,
    _dir: tempfile::TempDir,
}

impl Installed {
    /// Installs the chart and starts the operator as its Deployment would.
    pub async fn new(client: &Client, test_ns: &str) -> Self {
        // Other tests apply the same CRD; make sure it is there so helm skips its copy cleanly.
        ensure_crd(client).await;
        let suffix = random_suffix();
        let release_ns = format!("helm-release-{suffix}");
        let fullname = format!("mlflow-operator-{suffix}");
        let [webhook_port, metrics_port] = free_ports();
        let dir = tempfile::tempdir().unwrap();
        // Scoped to the test namespace; the URL reaches the operator run below on this host.
        let values = json!({
            "fullnameOverride": fullname,
            "webhook": {
                "url": format!("https://127.0.0.1:{webhook_port}/mutate"),
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": test_ns}},
                "certificates": {"selfManaged": {"dnsNames": ["127.0.0.1"]}}
            }
        });
        let values_file = dir.path().join("values.yaml");
        std::fs::write(&values_file, serde_yaml_ng::to_string(&values).unwrap()).unwrap();
        let release = Release {
            name: "mlflow-operator".into(),
            namespace: release_ns.clone(),
        };
        let values_file = values_file.to_str().unwrap();
        helm_ok(&[
            "install",
            &release.name,
            CHART,
            "-n",
            &release_ns,
            "--create-namespace",
            "-f",
            values_file,
        ])
        .await;
        let deploy = assert_installed(client, &release_ns, &fullname).await;

        let mut args = deploy.spec.template.spec.unwrap().containers[0]
            .args
            .clone()
            .unwrap();
        set_flag(
            &mut args,
            "--webhook-addr",
            &format!("127.0.0.1:{webhook_port}"),
        );
        set_flag(
            &mut args,
            "--metrics-addr",
            &format!("127.0.0.1:{metrics_port}"),
        );
        let token = service_account_token(client, &release_ns, &fullname).await;
        let kubeconfig = dir.path().join("operator.kubeconfig");
        std::fs::write(&kubeconfig, token_kubeconfig(&token)).unwrap();
        args.push(format!("--kubeconfig={}", kubeconfig.display()));
        let env = [
            ("POD_NAMESPACE", release_ns.clone()),
            ("POD_NAME", format!("{fullname}-0")),
        ];
        let operator = Operator::start(&args, &env, dir.path().join("operator.log"));
        Self {
            client: client.clone(),
            test_ns: test_ns.to_string(),
            release_ns,
            fullname,
            args,
            metrics_port,
            operator: Some(operator),
            _release: release,
            _dir: dir,
        }
    }

    /// The value of `--name=...` on the operator's command line.
    pub fn flag(&self, name: &str) -> &str {
        super::flag(&self.args, name).unwrap_or_else(|| panic!("the chart passes no {name}"))
    }
}

/// The chart's objects are there, its pod template is Pod Security "restricted", and the webhook
/// configuration waits for the operator to set its caBundle. Returns the Deployment.
async fn assert_installed(client: &Client, release_ns: &str, fullname: &str) -> Deployment {
    let deploy: Deployment = Api::namespaced(client.clone(), release_ns)
        .get(fullname)
        .await
        .expect("the Deployment");
    assert_eq!(deploy.spec.replicas, Some(2));
    let mwc = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get(fullname)
        .await
        .expect("the MutatingWebhookConfiguration");
    let webhook = &mwc.webhooks.as_ref().unwrap()[0];
    assert!(webhook.client_config.ca_bundle.is_none());
    assert_pss_restricted(client, release_ns, &deploy).await;
    deploy
}

/// A token of the chart's ServiceAccount.
async fn service_account_token(client: &Client, ns: &str, name: &str) -> String {
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .expect("TokenRequest")
        .status
        .and_then(|s| s.token)
        .expect("a token")
}

/// A kubeconfig that authenticates with `token` to the admin kubeconfig's cluster.
fn token_kubeconfig(token: &str) -> String {
    let admin = kube::config::Kubeconfig::read().expect("the admin kubeconfig ($KUBECONFIG)");
    let context = admin
        .contexts
        .iter()
        .find(|c| Some(&c.name) == admin.current_context.as_ref())
        .and_then(|c| c.context.clone())
        .expect("a current context");
    let cluster = admin
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)
        .and_then(|c| c.cluster.clone())
        .expect("the current context's cluster");
    let kc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": cluster}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "cluster", "user": "operator"}}],
        "current-context": "operator"
    });
    serde_yaml_ng::to_string(&kc).unwrap()
}

/// Replaces the value of `--name=...` in `args` (the CLI refuses a flag given twice).
fn set_flag(args: &mut [String], name: &str, value: &str) {
    let prefix = format!("{name}=");
    let arg = args
        .iter_mut()
        .find(|a| a.starts_with(&prefix))
        .unwrap_or_else(|| panic!("the chart passes no {name}"));
    *arg = format!("{prefix}{value}");
}

/// A Helm release in its own namespace; uninstalled (and the namespace deleted) on drop, also
/// when the test panics.
pub struct Release {
    pub name: String,
    pub namespace: String,
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = std::process::Command::new(super::common::helm::program())
            .args([
                "uninstall",
                &self.name,
                "-n",
                &self.namespace,
                "--wait=false",
            ])
            .output();
        let _ = std::process::Command::new("kubectl")
            .args(["delete", "namespace", &self.namespace, "--wait=false"])
            .output();
    }
}

/// The operator binary as a child process with only the given environment, as in its pod;
/// killed on drop, its log printed when the test fails.
pub struct Operator {
    child: std::process::Child,
    log: PathBuf,
}

impl Operator {
    fn start(args: &[String], env: &[(&str, String)], log: PathBuf) -> Self {
        let log_file = std::fs::File::create(&log).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_mlflow-operator"))
            .args(args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info,kube_runtime=warn")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .expect("start mlflow-operator");
        Self { child, log }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("---- mlflow-operator log ----\n{log}\n---- end of log ----");
        }
    }
}
