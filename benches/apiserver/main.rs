//! Admission through the real API server, on the real node with the chart installed as the
//! README says, in three setups measured in one run: no webhook, the floor registered as the
//! webhook, and ours. The floor (`benches/support/floor.rs`) runs as this benchmark binary in
//! pods of the operator's image, as many and with the same resources as ours, behind a Service of
//! the same shape, registered with a copy of the chart's MutatingWebhookConfiguration (same
//! rules, selectors, failure policy and timeout); it answers every review with the patch ours
//! makes for the benchmark's pod, so the API server applies the same change in both and the
//! difference is the webhook's own cost. For each setup: labelled pods created per second (the
//! same pod, the same client concurrency, setups rotated each round), each create's latency as
//! the client sees it, and the API server's own
//! `apiserver_admission_webhook_admission_duration_seconds{name=...}` for each webhook, from its
//! /metrics (p50 and p99 interpolated within buckets), per round and over the run.
//!
//! Every setup's load starts from an empty namespace: the pods of the load before are deleted
//! and gone first. Pods left to pile up made each load slower than the one before, so one slow
//! load moved a whole run's p99 by tens of percent. The goals are judged on the median over the
//! rounds of ours against the floor in the same round, which one slow load cannot move.
//!
//! Full: `cargo bench --bench apiserver` inside the cluster with the operator image loaded
//! (6 rounds of 15 s per setup, 8 creators). Under `cargo test` it is a check, not a measurement:
//! one short round per setup, every pod created through a webhook injected and none without.
//!
//! `--during-deletion=N`: before each load, N other labelled pods are created without a webhook,
//! and the load runs while one collection delete removes them, as when a large job ends. Every
//! deletion is an event for ours' leader, which also answers about half of ours' admissions; the
//! floor's pods do nothing else. So this asks whether ours pays more than the floor for a mass
//! deletion (the fourteenth stop's second run hinted so, without measuring it apart).

#[path = "../support/args.rs"]
mod args;
use mlflow_operator_test_support as common;
#[path = "../support/floor.rs"]
mod floor;
mod floor_pods;
#[path = "../support/histogram.rs"]
mod histogram;
// Its process memory reader is for benchmarks that start the operator themselves.
#[allow(dead_code)]
#[path = "../support/machine.rs"]
mod machine;
mod report;
mod setups;
#[path = "../support/spread.rs"]
mod spread;

use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::helm::{CHART, helm_ok as helm};
use common::node::{is_ready, pods_when};
use common::{eventually, kubectl};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::PostParams;
use kube::{Api, Client};
use setups::{Setup, injected, pod};

const RELEASE: &str = "mlflow-operator";
const MINUTE: Duration = Duration::from_secs(60);

pub struct Plan {
    rounds: usize,
    each: Duration,
    creators: usize,
    /// Pods deleted under each load (`--during-deletion=N`).
    during_deletion: Option<usize>,
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("serve-floor") {
        return floor::main(&argv[2..]);
    }
    let args = args::Args::parse("apiserver");
    if !args.selected {
        return ExitCode::SUCCESS;
    }
    histogram::self_check();
    spread::self_check();
    let during_deletion = match during_deletion(&argv) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("apiserver: {e}");
            return ExitCode::from(2);
        }
    };
    let plan = match args.full {
        true => Plan {
            rounds: 6,
            each: Duration::from_secs(15),
            creators: 8,
            during_deletion,
        },
        false => Plan {
            rounds: 1,
            each: Duration::from_secs(3),
            creators: 8,
            during_deletion: during_deletion.map(|n| n.min(300)),
        },
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(plan));
    ExitCode::SUCCESS
}

/// `--during-deletion=N`, if given.
fn during_deletion(argv: &[String]) -> Result<Option<usize>, String> {
    let Some(n) = argv
        .iter()
        .find_map(|a| a.strip_prefix("--during-deletion="))
    else {
        return Ok(None);
    };
    match n.parse() {
        Ok(n) if n > 0 => Ok(Some(n)),
        _ => Err(format!(
            "--during-deletion={n}: give the number of pods to delete under each load, e.g. --during-deletion=10000"
        )),
    }
}

/// Uninstalls the release and deletes the namespaces and the floor's registration when dropped,
/// also on panic. The uninstall waits: a controller left running would also reconcile the
/// bindings of what runs next.
struct Cleanup {
    team: String,
    floor: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let run = |bin: &str, args: &[&str]| {
            let _ = std::process::Command::new(bin).args(args).output();
        };
        run(
            "kubectl",
            &["delete", "mutatingwebhookconfiguration", floor_pods::NAME],
        );
        run(
            "helm",
            &["uninstall", RELEASE, "-n", RELEASE, "--wait=false"],
        );
        for ns in [self.team.as_str(), self.floor.as_str(), RELEASE] {
            run("kubectl", &["delete", "namespace", ns, "--wait=false"]);
        }
    }
}

/// What one setup's load in one round saw.
pub struct Round {
    round: usize,
    setup: Setup,
    created: usize,
    injected: usize,
    failed: usize,
    elapsed: Duration,
    /// Each create's latency as the client saw it, in microseconds.
    latency: hdrhistogram::Histogram<u64>,
    /// The API server's admission-duration histogram of the setup's webhook over this load.
    webhook: Option<histogram::Histogram>,
    first_error: Option<String>,
    /// With `--during-deletion`: how long the collection delete under the load took.
    deletion: Option<Duration>,
    /// CPU seconds both operator pods used over the load: besides ours' admissions, the
    /// leader's pod watch of every pod created or deleted, whichever webhook runs.
    operators_cpu: f64,
}

impl Round {
    fn per_second(&self) -> f64 {
        self.created as f64 / self.elapsed.as_secs_f64()
    }
}

async fn run(plan: Plan) {
    let client = common::client().await;
    common::ensure_crd(&client).await;
    let suffix = common::random_suffix();
    let team = format!("apiserver-bench-{suffix}");
    let floor_ns = format!("apiserver-bench-floor-{suffix}");
    let _cleanup = Cleanup {
        team: team.clone(),
        floor: floor_ns.clone(),
    };
    install(&client, &team).await;
    let mut setups = setups::Setups::new(&client, &team).await;
    let (patch, made_by_ours) = setups.our_patch().await;
    setups.floor = floor_pods::deploy(&client, &floor_ns, &setups.ours, &patch).await;
    setups.check_floor_makes(&made_by_ours).await;
    let before = machine::Sample::now();
    let mut rounds = Vec::new();
    for i in 0..plan.rounds {
        for setup in Setup::rotated(i) {
            setups::clear(&client, &team).await;
            if let Some(n) = plan.during_deletion {
                setups.switch(Setup::Bare).await;
                fill(&client, &team, n, plan.creators).await;
            }
            setups.switch(setup).await;
            let (start, cpu) = (setups::scrape(&client).await, operators_cpu(&client).await);
            let mut round = match plan.during_deletion {
                None => load(&client, &team, &plan, setup, i).await,
                Some(_) => load_during_deletion(&client, &team, &plan, setup, i).await,
            };
            round.webhook = setups::scrape(&client).await.since(&start, setup);
            round.operators_cpu = operators_cpu(&client).await - cpu;
            rounds.push(round);
        }
    }
    let window = before.until(&machine::Sample::now());
    report::check(&rounds);
    let operators = no_restarts(&client).await;
    report::print(&plan, &rounds, &window);
    // The namespace holds the last load's pods: each load starts from an empty one.
    let left = rounds.last().map_or(0, |r| r.created);
    println!("\noperator pods at the end, with {left} labelled pods in the namespace:");
    for p in &operators {
        let (working_set, rss, _) = common::node::container_usage(p);
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        let name = p.metadata.name.as_deref().unwrap_or_default();
        println!(
            "- {name}: working set {:.1} MiB, RSS {:.1} MiB",
            mib(working_set),
            mib(rss)
        );
    }
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

/// `n` pods labelled [`setups::OLD`], by `creators` clients at once.
async fn fill(client: &Client, team: &str, n: usize, creators: usize) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), team);
    let (created, first_error) = (AtomicUsize::new(0), Mutex::new(None));
    let deadline = Instant::now() + 10 * MINUTE;
    let creator = || async {
        let pod = setups::old_pod();
        while created.load(Ordering::Relaxed) < n && Instant::now() < deadline {
            match pods.create(&PostParams::default(), &pod).await {
                Ok(_) => {
                    created.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    first_error.lock().unwrap().get_or_insert(e.to_string());
                }
            }
        }
    };
    futures::future::join_all((0..creators).map(|_| creator())).await;
    let made = created.into_inner();
    let error = first_error.into_inner().unwrap();
    assert!(
        made >= n,
        "{made} of {n} pods to delete created in 10 minutes: {error:?}"
    );
}

/// [`load`] while one collection delete removes the pods [`fill`] made.
async fn load_during_deletion(
    client: &Client,
    team: &str,
    plan: &Plan,
    setup: Setup,
    i: usize,
) -> Round {
    let deleting = async {
        let started = Instant::now();
        setups::clear_selected(client, team, Some(setups::OLD)).await;
        started.elapsed()
    };
    let (mut round, took) = tokio::join!(load(client, team, plan, setup, i), deleting);
    round.deletion = Some(took);
    round
}

/// `creators` clients creating the pod one after another each, for `each`: round `i` of `setup`.
async fn load(client: &Client, team: &str, plan: &Plan, setup: Setup, i: usize) -> Round {
    let pods: Api<Pod> = Api::namespaced(client.clone(), team);
    let (created, injected_n, failed) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    let first_error = Mutex::new(None);
    let latency =
        Mutex::new(hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap());
    let started = Instant::now();
    let deadline = started + plan.each;
    let creator = || async {
        let pod = pod();
        while Instant::now() < deadline {
            let sent = Instant::now();
            let result = pods.create(&PostParams::default(), &pod).await;
            let took = sent.elapsed().as_micros() as u64;
            match result {
                Ok(p) => {
                    created.fetch_add(1, Ordering::Relaxed);
                    latency.lock().unwrap().saturating_record(took);
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
        round: i,
        setup,
        created: created.into_inner(),
        injected: injected_n.into_inner(),
        failed: failed.into_inner(),
        elapsed: started.elapsed(),
        latency: latency.into_inner().unwrap(),
        webhook: None,
        first_error: first_error.into_inner().unwrap(),
        deletion: None,
        operators_cpu: 0.0,
    }
}

async fn operator_pods(client: &Client) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), RELEASE);
    let selector = format!("app.kubernetes.io/instance={RELEASE}");
    let list = pods
        .list(&kube::api::ListParams::default().labels(&selector))
        .await
        .expect("the operator pods");
    list.items
}

/// CPU seconds the operator pods have used so far, together.
async fn operators_cpu(client: &Client) -> f64 {
    let pods = operator_pods(client).await;
    pods.iter()
        .map(|p| common::node::container_usage(p).2)
        .sum()
}

/// The operator pods never restarted: the leader watches every labelled pod, and a load leaves
/// thousands of them in one namespace (this found the counting that built them all at
/// once and took the leader past its memory limit).
async fn no_restarts(client: &Client) -> Vec<Pod> {
    let pods = operator_pods(client).await;
    for p in &pods {
        let restarts: i32 = p
            .status
            .iter()
            .flat_map(|s| s.container_statuses.iter().flatten())
            .map(|c| c.restart_count)
            .sum();
        assert_eq!(restarts, 0, "operator pod {:?} restarted", p.metadata.name);
    }
    pods
}
