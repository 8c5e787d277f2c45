//! Admission through the real API server, on the real node with the chart installed as the
//! README says: labelled pods created per second with our webhook registered and without it
//! (the same pod, the same client concurrency, rounds interleaved), and the API server's own
//! view of our webhook, `apiserver_admission_webhook_admission_duration_seconds{name=
//! "pods.mlflow-operator.io"}`, from its /metrics (p50 and p99 interpolated within buckets).
//!
//! Full: `cargo bench --bench apiserver` inside the cluster with the operator image loaded
//! (3 rounds of 20 s each way, 8 creators). Under `cargo test` it is a check, not a measurement:
//! one short round each way, every pod of the first injected and none of the second.

#[path = "support/args.rs"]
mod args;
use mlflow_operator_test_support as common;
#[path = "support/histogram.rs"]
mod histogram;
// Its process memory reader is for benchmarks that start the operator themselves.
#[allow(dead_code)]
#[path = "support/machine.rs"]
mod machine;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::helm::{CHART, helm_ok as helm};
use common::node::{BUSYBOX, TRACK, is_ready, pods_when};
use common::{eventually, kubectl};
use histogram::Histogram;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

const RELEASE: &str = "mlflow-operator";
const WEBHOOK: &str = "pods.mlflow-operator.io";
const METRIC: &str = "apiserver_admission_webhook_admission_duration_seconds";
const MINUTE: Duration = Duration::from_secs(60);

struct Plan {
    rounds: usize,
    each: Duration,
    creators: usize,
}

fn main() {
    let args = args::Args::parse("apiserver");
    if !args.selected {
        return;
    }
    histogram::self_check();
    let plan = match args.full {
        true => Plan {
            rounds: 3,
            each: Duration::from_secs(20),
            creators: 8,
        },
        false => Plan {
            rounds: 1,
            each: Duration::from_secs(3),
            creators: 8,
        },
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(plan));
}

/// Uninstalls the release and deletes the namespaces when dropped, also on panic. The uninstall
/// waits: a controller left running would also reconcile the bindings of what runs next.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let run = |bin: &str, args: &[&str]| {
            let _ = std::process::Command::new(bin).args(args).output();
        };
        run(
            "helm",
            &["uninstall", RELEASE, "-n", RELEASE, "--wait=false"],
        );
        for ns in [self.0.as_str(), RELEASE] {
            run("kubectl", &["delete", "namespace", ns, "--wait=false"]);
        }
    }
}

/// What one round of load saw.
struct Round {
    webhook: bool,
    created: usize,
    injected: usize,
    failed: usize,
    elapsed: Duration,
    first_error: Option<String>,
}

impl Round {
    fn per_second(&self) -> f64 {
        self.created as f64 / self.elapsed.as_secs_f64()
    }
}

async fn run(plan: Plan) {
    let client = common::client().await;
    common::ensure_crd(&client).await;
    let team = format!("apiserver-bench-{}", common::random_suffix());
    let _cleanup = Cleanup(team.clone());
    install(&client, &team).await;
    let mwcs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let saved = registration(&mwcs).await;
    let before = machine::Sample::now();
    let (mut rounds, mut observed) = (Vec::new(), Histogram::default());
    for _ in 0..plan.rounds {
        for webhook in [true, false] {
            set_webhook(&client, &team, &saved, webhook).await;
            let start = scrape(&client).await;
            rounds.push(load(&client, &team, &plan, webhook).await);
            observed = observed.plus(&scrape(&client).await.since(&start));
        }
    }
    let window = before.until(&machine::Sample::now());
    for r in &rounds {
        assert_eq!(
            r.injected,
            if r.webhook { r.created } else { 0 },
            "with the webhook every pod is injected, without it none"
        );
    }
    assert!(
        observed.count()
            >= rounds
                .iter()
                .filter(|r| r.webhook)
                .map(|r| r.created)
                .sum::<usize>() as f64,
        "the API server counted every admission our webhook made"
    );
    report(&plan, &rounds, &observed, &window);
}

/// The team namespace with a Ready binding, the chart installed as the README says (plus the
/// local image's pull policy), both operator pods Ready and the webhook injecting.
async fn install(client: &Client, team: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    eventually(
        "no release namespace left from a run before",
        2 * MINUTE,
        || async {
            namespaces
                .get_opt(RELEASE)
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;
    let manifest = format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: {team}}}
---
apiVersion: mlflow-operator.io/v1alpha1
kind: MlflowWorkspaceBinding
metadata: {{name: fraud, namespace: {team}}}
spec: {{trackingUri: "http://mlflow.example.invalid:5000", experimentName: fraud-detection}}
"#
    );
    kubectl(&["apply", "-f", "-"], &manifest).await;
    helm(&[
        "install",
        RELEASE,
        CHART,
        "-n",
        RELEASE,
        "--create-namespace",
        "--set",
        "image.pullPolicy=Never",
    ])
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), RELEASE);
    let selector = format!("app.kubernetes.io/instance={RELEASE}");
    pods_when(
        &pods,
        &selector,
        "two Ready operator pods",
        3 * MINUTE,
        |ps| ps.len() == 2 && ps.iter().all(is_ready),
    )
    .await;
}

/// The chart's MutatingWebhookConfiguration as installed, ready to be created again.
async fn registration(mwcs: &Api<MutatingWebhookConfiguration>) -> Value {
    let mut mwc =
        serde_json::to_value(mwcs.get(RELEASE).await.expect("the chart's webhook")).unwrap();
    let meta = mwc["metadata"].as_object_mut().unwrap();
    for field in [
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "managedFields",
        "generation",
    ] {
        meta.remove(field);
    }
    mwc
}

/// Registers the webhook (or removes it) and waits until the API server acts on the change:
/// a dry-run labelled pod comes back injected (or not).
async fn set_webhook(client: &Client, team: &str, saved: &Value, registered: bool) {
    let mwcs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let present = mwcs.get_opt(RELEASE).await.unwrap().is_some();
    match (registered, present) {
        (true, false) => {
            let mwc: MutatingWebhookConfiguration = serde_json::from_value(saved.clone()).unwrap();
            mwcs.create(&PostParams::default(), &mwc).await.unwrap();
        }
        (false, true) => {
            mwcs.delete(RELEASE, &DeleteParams::default())
                .await
                .unwrap();
        }
        _ => {}
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), team);
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let what = format!("the API server to see the webhook registered: {registered}");
    eventually(&what, 2 * MINUTE, || async {
        let p = pods.create(&dry, &pod()).await.ok()?;
        (injected(&p) == registered).then_some(())
    })
    .await;
}

/// A labelled pod held from scheduling, so it costs the node nothing.
fn pod() -> Pod {
    serde_json::from_value(json!({
        "metadata": {"generateName": "load-", "labels": {TRACK: "true"}},
        "spec": {
            "schedulingGates": [{"name": "mlflow-operator.io/never-scheduled"}],
            "containers": [{"name": "c", "image": BUSYBOX}]
        }
    }))
    .unwrap()
}

fn injected(p: &Pod) -> bool {
    let containers = p.spec.iter().flat_map(|s| s.containers.iter());
    containers
        .flat_map(|c| c.env.iter().flatten())
        .any(|e| e.name == "MLFLOW_TRACKING_URI")
}

/// `creators` clients creating the pod one after another each, for `each`.
async fn load(client: &Client, team: &str, plan: &Plan, webhook: bool) -> Round {
    let pods: Api<Pod> = Api::namespaced(client.clone(), team);
    let (created, injected_n, failed) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    let first_error = std::sync::Mutex::new(None);
    let started = Instant::now();
    let deadline = started + plan.each;
    let creator = || async {
        let pod = pod();
        while Instant::now() < deadline {
            match pods.create(&PostParams::default(), &pod).await {
                Ok(p) => {
                    created.fetch_add(1, Ordering::Relaxed);
                    if injected(&p) {
                        injected_n.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(e) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    first_error.lock().unwrap().get_or_insert(e.to_string());
                }
            }
        }
    };
    futures::future::join_all((0..plan.creators).map(|_| creator())).await;
    Round {
        webhook,
        created: created.into_inner(),
        injected: injected_n.into_inner(),
        failed: failed.into_inner(),
        elapsed: started.elapsed(),
        first_error: first_error.into_inner().unwrap(),
    }
}

/// Our webhook's admission-duration histogram from the API server's /metrics.
async fn scrape(client: &Client) -> Histogram {
    let req = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client
        .request_text(req)
        .await
        .expect("the API server's /metrics");
    Histogram::parse(&text, METRIC, &[&format!("name=\"{WEBHOOK}\"")])
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn report(plan: &Plan, rounds: &[Round], observed: &Histogram, machine: &machine::Window) {
    println!(
        "\n{} rounds each way, {} s each, {} creators; {machine}\n",
        plan.rounds,
        plan.each.as_secs(),
        plan.creators
    );
    println!(
        "| round | webhook | pods created | pods/s | injected | failed |\n|---|---|---|---|---|---|"
    );
    for (i, r) in rounds.iter().enumerate() {
        println!(
            "| {} | {} | {} | {:.1} | {} | {}{} |",
            i / 2,
            if r.webhook {
                "registered"
            } else {
                "not registered"
            },
            r.created,
            r.per_second(),
            r.injected,
            r.failed,
            r.first_error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
    }
    let rate = |w: bool| -> Vec<f64> {
        rounds
            .iter()
            .filter(|r| r.webhook == w)
            .map(Round::per_second)
            .collect()
    };
    let (with, without) = (rate(true), rate(false));
    let spread = |v: &[f64]| {
        let (lo, hi) = v
            .iter()
            .fold((f64::MAX, 0f64), |(l, h), x| (l.min(*x), h.max(*x)));
        format!("{lo:.1}-{hi:.1}")
    };
    println!(
        "\npods/s, median (spread): with the webhook {:.1} ({}), without {:.1} ({}); ratio {:.2}",
        median(with.clone()),
        spread(&with),
        median(without.clone()),
        spread(&without),
        median(with.clone()) / median(without.clone())
    );
    let ms = |q: f64| {
        observed
            .quantile(q)
            .map_or("-".into(), |s| format!("{:.1} ms", s * 1e3))
    };
    println!(
        "{METRIC}{{name=\"{WEBHOOK}\"}} over {} admissions: p50 {}, p99 {}",
        observed.count(),
        ms(0.5),
        ms(0.99)
    );
}
