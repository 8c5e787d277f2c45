//! A CA rollover of the self-managed certificates, as `mlflow-operator run` processes against the
//! real API server: a new CA written into the certificate Secret (as after the Secret was
//! deleted, or by hand) is served once the API server has shown that it trusts it, through the
//! CA probe and its canary webhook, while labelled pods are admitted through the API server
//! throughout; and when the probe cannot be reached, after its bound, with a clear error.

use mlflow_operator_test_support as common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::fake_tls::connector;
use common::operator::{OperatorProcess, answered};
use common::webhook::{ensure_crd, register, webhook_configuration};
use common::{eventually, eventually_ok, free_port, kubectl, random_suffix, with_temp_ns};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use mlflow_operator::certs::{self, probe};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);
/// The bound of the case whose evidence never comes (the default is 30 s).
const BOUND: Duration = Duration::from_secs(5);
const NAMES: [&str; 2] = ["127.0.0.1", "localhost"];

struct Setup {
    client: Client,
    ns: String,
    config: String,
    secret: String,
    port: u16,
}

/// Registers a webhook configuration on `127.0.0.1:<port>` for `ns` and starts a self-signed
/// operator process for it with `probe_addr`; returns once it serves.
async fn start(
    client: Client,
    ns: String,
    probe_addr: &str,
    bound: Duration,
) -> (Setup, OperatorProcess) {
    ensure_crd(&client).await;
    let suffix = random_suffix();
    let setup = Setup {
        config: format!("mlflow-operator-ca-{suffix}"),
        secret: format!("webhook-cert-{suffix}"),
        port: free_port(),
        client,
        ns,
    };
    let url = format!("https://127.0.0.1:{}/mutate", setup.port);
    register(
        &setup.client,
        &webhook_configuration(&setup.config, &url, None, &setup.ns).await,
    )
    .await;
    let args = [
        format!("--namespace={}", setup.ns),
        format!("--watch-namespace={}", setup.ns),
        format!("--lease-name=lease-{suffix}"),
        "--lease-duration=2s".into(),
        "--self-signed".into(),
        format!("--cert-dns-names={}", NAMES.join(",")),
        format!("--webhook-config={}", setup.config),
        format!("--cert-secret={}", setup.secret),
        format!("--webhook-addr=127.0.0.1:{}", setup.port),
        "--cert-check-interval=1s".into(),
        format!("--ca-probe-addr={probe_addr}"),
        format!("--ca-probe-timeout={}s", bound.as_secs()),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let op = OperatorProcess::start("operator", &args);
    op.wait_status("/readyz", 200, WAIT).await;
    let binding = json!({
        "apiVersion": "mlflow-operator.io/v1alpha1", "kind": "MlflowWorkspaceBinding",
        "metadata": {"name": "team", "namespace": setup.ns},
        "spec": {"trackingUri": "http://mlflow.mlflow.svc:5000"}
    });
    kubectl(&["apply", "-f", "-"], &binding.to_string()).await;
    (setup, op)
}

/// Writes a new CA and its serving certificate into the Secret; returns the new CA.
async fn write_new_ca(s: &Setup) -> String {
    let names: Vec<String> = NAMES.iter().map(|n| n.to_string()).collect();
    let pems = certs::generate(&names, 3650, 365, jiff::Timestamp::now().as_second()).unwrap();
    let secrets: Api<Secret> = Api::namespaced(s.client.clone(), &s.ns);
    let mut secret = secrets.get(&s.secret).await.unwrap();
    let data = secret.data.as_mut().unwrap();
    for (key, value) in [
        ("ca.crt", &pems.ca_cert),
        ("ca.key", &pems.ca_key),
        ("tls.crt", &pems.cert),
        ("tls.key", &pems.key),
    ] {
        data.insert(
            key.into(),
            k8s_openapi::ByteString(value.as_bytes().to_vec()),
        );
    }
    secrets
        .replace(&s.secret, &PostParams::default(), &secret)
        .await
        .unwrap();
    pems.ca_cert
}

fn labelled() -> Pod {
    serde_json::from_value(json!({
        "metadata": {"generateName": "train-", "labels": {"mlflow-operator.io/track": "true"}},
        "spec": {"containers": [{"name": "train", "image": "python:3.11"}]}
    }))
    .unwrap()
}

fn dry_run() -> PostParams {
    PostParams {
        dry_run: true,
        ..Default::default()
    }
}

/// Labelled pods created (dry run) through the API server one after another until `stop`:
/// how many were admitted, and the errors of those that were not.
fn admissions(
    client: &Client,
    ns: &str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    tokio::spawn(async move {
        let (mut admitted, mut failed) = (0, Vec::new());
        while !stop.load(Ordering::Relaxed) {
            match pods.create(&dry_run(), &labelled()).await {
                Ok(_) => admitted += 1,
                Err(e) => failed.push(e.to_string()),
            }
        }
        (admitted, failed)
    })
}

/// The webhook serves a certificate that `ca` verifies.
async fn serves_a_certificate_of(port: u16, ca: &str) {
    let tls = connector(ca);
    eventually(
        "the webhook to serve the new CA's certificate",
        WAIT,
        || async { answered(port, &tls, Duration::from_secs(5)).await.ok() },
    )
    .await;
}

async fn canary_removed(s: &Setup) {
    let mwcs: Api<MutatingWebhookConfiguration> = Api::all(s.client.clone());
    let hooks = mwcs
        .get(&s.config)
        .await
        .unwrap()
        .webhooks
        .unwrap_or_default();
    let names: Vec<&str> = hooks.iter().map(|w| w.name.as_str()).collect();
    assert!(
        !names
            .iter()
            .any(|n| n.ends_with(".ca-probe.mlflow-operator.io")),
        "{names:?}"
    );
}

#[tokio::test]
async fn a_new_ca_is_served_once_the_api_server_shows_it_trusts_it() {
    with_temp_ns("ca-rollover", |client, ns| async move {
        let probe_port = free_port();
        let (s, op) = start(client, ns, &format!("127.0.0.1:{probe_port}"), probe::BOUND).await;
        // The API server calls the webhook before the change, so the load covers the rollover.
        let pods: Api<Pod> = Api::namespaced(s.client.clone(), &s.ns);
        eventually_ok("the API server to call the webhook", WAIT, || async {
            pods.create(&dry_run(), &labelled())
                .await
                .map_err(|e| e.to_string())
        })
        .await;
        let stop = Arc::new(AtomicBool::new(false));
        let load = admissions(&s.client, &s.ns, stop.clone());
        let new_ca = write_new_ca(&s).await;
        serves_a_certificate_of(s.port, &new_ca).await;
        let log = op.output();
        let line = log
            .lines()
            .find(|l| l.contains("the API server trusts the new CA"));
        assert!(line.is_some(), "{log}");
        println!("{}", line.unwrap());
        stop.store(true, Ordering::Relaxed);
        let (admitted, failed) = load.await.unwrap();
        println!(
            "rollover: {admitted} labelled pods admitted through the API server, {} failed",
            failed.len()
        );
        assert!(
            failed.is_empty(),
            "admissions failed during the rollover: {failed:#?}"
        );
        canary_removed(&s).await;
        let _ = Api::<MutatingWebhookConfiguration>::all(s.client.clone())
            .delete(&s.config, &DeleteParams::default())
            .await;
    })
    .await;
}

#[tokio::test]
async fn without_evidence_the_new_ca_is_served_after_the_bound_with_an_error() {
    with_temp_ns("ca-unproven", |client, ns| async move {
        // The canary's URL is 127.0.0.1:<port>; the probe listens elsewhere: never reached.
        let port = free_port();
        let (s, op) = start(client, ns, &format!("127.0.0.2:{port}"), BOUND).await;
        let new_ca = write_new_ca(&s).await;
        let started = std::time::Instant::now();
        eventually("the error after the bound", BOUND + WAIT, || async {
            op.output()
                .contains("no evidence that the API server trusts the new CA")
                .then_some(())
        })
        .await;
        let waited = started.elapsed();
        assert!(waited >= BOUND, "gave up after {waited:?}");
        let log = op.output();
        assert!(log.contains("last_failure"), "{log}");
        serves_a_certificate_of(s.port, &new_ca).await;
        canary_removed(&s).await;
        let _ = Api::<MutatingWebhookConfiguration>::all(s.client.clone())
            .delete(&s.config, &DeleteParams::default())
            .await;
    })
    .await;
}
