//! Scale and start-up of the real `mlflow-operator run` binary against the real API server, with
//! fake Entra ID and ARM (the only fakes): N bindings in M namespaces over 10 Azure ML workspaces.
//!
//! - created while the operator runs: every binding is created (32 in flight); the time until
//!   all are Ready, the ARM calls (exactly one per workspace), the operator's RSS;
//! - unresolved at the operator's start (their statuses cleared): from process start until all
//!   are Ready, the ARM calls (one per workspace again: a new process), the RSS; then one
//!   refresh interval later, exactly one more ARM call per workspace;
//! - start-up with every binding Ready: the time from process start to `/readyz` answering 200
//!   and to the first patched AdmissionReview answer over HTTPS, the RSS then, and the ARM calls
//!   of the new leader.
//!
//! Full: `cargo bench --bench scale` inside the cluster (1,000 bindings in 100 namespaces, the
//! release binary, 5 start-ups). Under `cargo test` it is a check, not a measurement: 200 bindings
//! in 20 namespaces, one start-up, every assertion the same.

#[path = "support/args.rs"]
mod args;
#[path = "support/cluster.rs"]
mod cluster;
use mlflow_operator_test_support as common;
#[path = "support/https.rs"]
mod https;
#[path = "support/machine.rs"]
mod machine;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::fake_azure::{FakeAzure, Identity};
use common::operator::OperatorProcess;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use mlflow_operator::binding::MlflowWorkspaceBinding;
use serde_json::json;

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
const SECRET: &str = "scale-client-secret";
const SUB: &str = "00000000-0000-0000-0000-0000000000aa";
const RG: &str = "scale-rg";
const WORKSPACES: usize = 10;
const LABEL: &str = "mlflow-operator.io/scale";
const IN_FLIGHT: usize = 32;

struct Shape {
    namespaces: usize,
    per_namespace: usize,
    refresh: Duration,
    startups: usize,
}

impl Shape {
    fn bindings(&self) -> usize {
        self.namespaces * self.per_namespace
    }
}

fn main() {
    let args = args::Args::parse("scale");
    if !args.selected {
        return;
    }
    let shape = match args.full {
        true => Shape {
            namespaces: 100,
            per_namespace: 10,
            refresh: Duration::from_secs(45),
            startups: 5,
        },
        false => Shape {
            namespaces: 20,
            per_namespace: 10,
            refresh: Duration::from_secs(15),
            startups: 1,
        },
    };
    cluster::block_on(run(shape));
}

/// Everything a run of the operator needs: its flags, environment and the fakes.
struct Setup {
    run: String,
    namespaces: Vec<String>,
    fake: FakeAzure,
    files: tempfile::TempDir,
    ca_pem: String,
    refresh: Duration,
}

async fn run(shape: Shape) {
    let client = common::client().await;
    common::ensure_crd(&client).await;
    earlier_runs_gone(&client).await;
    let before = machine::Sample::now();
    let setup = setup(&client, &shape).await;
    let _cleanup = cluster::LabelledNamespaces {
        label: LABEL,
        run: setup.run.clone(),
    };

    let (mut op, _) = start(&setup, "operator (bindings created while it runs)");
    op.wait_status("/readyz", 200, Duration::from_secs(60))
        .await;
    common::eventually("the operator to lead", Duration::from_secs(60), || async {
        op.is_leader().await.filter(|l| *l)
    })
    .await;
    let created = created_while_running(&client, &setup, &shape, &op).await;
    op.terminate();
    op.wait_exit(Duration::from_secs(30)).await;

    clear_statuses(&client, &setup, &shape).await;
    let resolved = unresolved_at_start(&client, &setup, &shape).await;

    let mut startups = Vec::new();
    for i in 0..shape.startups {
        startups.push(startup(&setup, i).await);
    }
    let after = machine::Sample::now();
    report(
        &shape,
        &created,
        &resolved,
        &startups,
        &before.until(&after),
    );
}

/// Waits until no namespace of an earlier run is left: while the API server was still deleting
/// an earlier run's 1,000 bindings, the operator's RSS when all were Ready read 4-7 MiB higher.
async fn earlier_runs_gone(client: &Client) {
    let api: Api<Namespace> = Api::all(client.clone());
    let labelled = ListParams::default().labels(LABEL);
    let what = "the namespaces of earlier runs to be deleted";
    common::eventually(what, Duration::from_secs(180), || async {
        let left = api.list_metadata(&labelled).await.ok()?;
        left.items.is_empty().then_some(())
    })
    .await;
}

async fn setup(client: &Client, shape: &Shape) -> Setup {
    let run = common::random_suffix();
    let namespaces: Vec<String> = (0..shape.namespaces)
        .map(|i| format!("scale-{run}-{i}"))
        .collect();
    let api: Api<Namespace> = Api::all(client.clone());
    futures::stream::iter(namespaces.iter())
        .for_each_concurrent(IN_FLIGHT, |name| {
            let ns = json!({"metadata": {"name": name, "labels": {LABEL: run}}});
            let api = api.clone();
            async move {
                let ns: Namespace = serde_json::from_value(ns).unwrap();
                api.create(&PostParams::default(), &ns)
                    .await
                    .expect("create namespace");
            }
        })
        .await;
    let identity = Identity {
        tenant_id: TENANT.into(),
        client_id: CLIENT_ID.into(),
        client_secret: Some(SECRET.into()),
        federated_subject: None,
    };
    let fake = FakeAzure::start(client.clone(), identity).await;
    for ws in 0..WORKSPACES {
        fake.set_workspace(SUB, RG, &workspace(ws), &tracking_uri(ws));
    }
    let files = tempfile::tempdir().unwrap();
    let (_, _, pems) = common::write_loopback_certificate(files.path());
    std::fs::write(files.path().join("azure-ca.pem"), &fake.ca_pem).unwrap();
    Setup {
        run,
        namespaces,
        fake,
        files,
        ca_pem: pems.ca_cert,
        refresh: shape.refresh,
    }
}

fn workspace(i: usize) -> String {
    format!("ws-{i}")
}

fn tracking_uri(i: usize) -> String {
    format!(
        "azureml://eastus.api.azureml.ms/mlflow/v1.0/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.MachineLearningServices/workspaces/{}",
        workspace(i)
    )
}

/// Starts the operator binary: every namespace, its webhook on a free port (returned), the fakes
/// as Azure.
fn start(setup: &Setup, label: &str) -> (OperatorProcess, u16) {
    let webhook_port = common::free_port();
    let file = |name: &str| setup.files.path().join(name).display().to_string();
    let flags = [
        format!("--kubeconfig={}", common::cluster_env("KUBECONFIG")),
        format!("--namespace={}", setup.namespaces[0]),
        format!("--lease-name=scale-{}", setup.run),
        format!("--identity=scale-{}", setup.run),
        format!("--webhook-addr=127.0.0.1:{webhook_port}"),
        format!("--tls-cert-file={}", file("tls.crt")),
        format!("--tls-key-file={}", file("tls.key")),
        format!("--arm-endpoint={}", setup.fake.arm_url),
        format!("--authority-host={}", setup.fake.authority_url),
        format!("--azure-ca-file={}", file("azure-ca.pem")),
        format!("--refresh-interval={}s", setup.refresh.as_secs()),
    ];
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let env = [
        ("AZURE_CLIENT_ID", CLIENT_ID),
        ("AZURE_TENANT_ID", TENANT),
        ("AZURE_CLIENT_SECRET", SECRET),
    ];
    let op = OperatorProcess::start_with_env(label, &args, &env);
    (op, webhook_port)
}

fn arm_calls(fake: &FakeAzure) -> usize {
    (0..WORKSPACES)
        .map(|ws| fake.arm_calls(&workspace(ws)))
        .sum()
}

/// From a start (the first create, or the process start) until every binding is Ready.
struct Phase {
    /// Creating every binding, when they were created in the phase.
    created: Option<Duration>,
    all_ready: Duration,
    /// ARM calls per workspace in the phase.
    calls: Vec<usize>,
    rss_kib: u64,
    hwm_kib: u64,
    /// Of the RSS: anonymous, and the binary's mapped pages.
    split_kib: (u64, u64),
    /// After the refresh that followed: the time since the start, the RSS then.
    refresh: Option<(Duration, u64)>,
}

fn calls_per_workspace(fake: &FakeAzure, before: &[usize]) -> Vec<usize> {
    (0..WORKSPACES)
        .map(|ws| fake.arm_calls(&workspace(ws)) - before.get(ws).copied().unwrap_or(0))
        .collect()
}

/// The operator runs; every binding is created; until all are Ready.
async fn created_while_running(
    client: &Client,
    setup: &Setup,
    shape: &Shape,
    op: &OperatorProcess,
) -> Phase {
    let n = shape.bindings();
    let ready = tokio::spawn(all_ready(client.clone(), setup.run.clone(), n));
    let started = Instant::now();
    create_bindings(client, setup, shape).await;
    let created = started.elapsed();
    let all_ready = wait_ready(ready, n).await - started;
    let calls = calls_per_workspace(&setup.fake, &[]);
    assert_eq!(
        calls,
        vec![1; WORKSPACES],
        "one ARM call per workspace until every binding is Ready; the operator's ARM requests:\n{}",
        arm_requests(op).await
    );
    let (rss_kib, hwm_kib) = machine::rss_kib(op.pid());
    Phase {
        created: Some(created),
        all_ready,
        calls,
        rss_kib,
        hwm_kib,
        split_kib: machine::rss_split_kib(op.pid()),
        refresh: None,
    }
}

/// The operator's own count of its ARM requests by outcome, for failure messages.
async fn arm_requests(op: &OperatorProcess) -> String {
    let (_, metrics) = op.get("/metrics").await.unwrap_or_default();
    let lines = metrics
        .lines()
        .filter(|l| l.contains("arm_request_duration_seconds_count"));
    lines.collect::<Vec<_>>().join("\n")
}

async fn wait_ready(ready: tokio::task::JoinHandle<Instant>, n: usize) -> Instant {
    tokio::time::timeout(Duration::from_secs(300), ready)
        .await
        .unwrap_or_else(|_| panic!("{n} bindings Ready within 300 s"))
        .unwrap()
}

/// Every binding without a status, as if the operator had never seen it.
async fn clear_statuses(client: &Client, setup: &Setup, shape: &Shape) {
    for_each_binding(setup, shape, |ns, j| async move {
        Api::<MlflowWorkspaceBinding>::namespaced(client.clone(), &ns)
            .patch_status(
                &format!("b-{j}"),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": null})),
            )
            .await
            .expect("clear a binding's status");
    })
    .await;
}

/// Runs `each` for binding `b-j` of every namespace, `IN_FLIGHT` at a time.
async fn for_each_binding<F, Fut>(setup: &Setup, shape: &Shape, each: F)
where
    F: Fn(String, usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let all = setup
        .namespaces
        .iter()
        .flat_map(|ns| (0..shape.per_namespace).map(move |j| (ns.clone(), j)));
    futures::stream::iter(all)
        .for_each_concurrent(IN_FLIGHT, |(ns, j)| each(ns, j))
        .await;
}

/// The operator starts with every binding unresolved; until all are Ready, then one refresh.
async fn unresolved_at_start(client: &Client, setup: &Setup, shape: &Shape) -> Phase {
    let n = shape.bindings();
    let before = calls_per_workspace(&setup.fake, &[]);
    let ready = tokio::spawn(all_ready(client.clone(), setup.run.clone(), n));
    let started = Instant::now();
    let (mut op, _) = start(setup, "operator (every binding unresolved at its start)");
    let all_ready = wait_ready(ready, n).await - started;
    let calls = calls_per_workspace(&setup.fake, &before);
    assert_eq!(
        calls,
        vec![1; WORKSPACES],
        "one ARM call per workspace until every binding is Ready; the operator's ARM requests:\n{}",
        arm_requests(&op).await
    );
    let (rss_kib, hwm_kib) = machine::rss_kib(op.pid());
    let split_kib = machine::rss_split_kib(op.pid());
    // The refresh: each workspace is asked again once, however many bindings share it.
    common::eventually("every workspace refreshed", shape.refresh * 3, || async {
        (calls_per_workspace(&setup.fake, &before)
            .iter()
            .all(|c| *c >= 2))
        .then_some(())
    })
    .await;
    let refresh = (started.elapsed(), machine::rss_kib(op.pid()).0);
    assert_eq!(
        calls_per_workspace(&setup.fake, &before),
        vec![2; WORKSPACES],
        "one more ARM call per workspace per refresh"
    );
    op.terminate();
    op.wait_exit(Duration::from_secs(30)).await;
    Phase {
        created: None,
        all_ready,
        calls,
        rss_kib,
        hwm_kib,
        split_kib,
        refresh: Some(refresh),
    }
}

/// Creates every binding, `IN_FLIGHT` at a time; binding `b-j` of each namespace uses
/// workspace `ws-j % 10`.
async fn create_bindings(client: &Client, setup: &Setup, shape: &Shape) {
    for_each_binding(setup, shape, |ns, j| async move {
        let b: MlflowWorkspaceBinding = serde_json::from_value(json!({
            "apiVersion": "mlflow-operator.io/v1alpha1", "kind": "MlflowWorkspaceBinding",
            "metadata": {"name": format!("b-{j}"), "labels": {LABEL: setup.run}},
            "spec": {
                "azureML": {"subscriptionId": SUB, "resourceGroup": RG,
                            "workspaceName": workspace(j % WORKSPACES)},
                "experimentName": "scale",
                "identity": {"workloadIdentity": {"clientId": CLIENT_ID, "tenantId": TENANT}}
            }
        }))
        .unwrap();
        Api::<MlflowWorkspaceBinding>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &b)
            .await
            .expect("create binding");
    })
    .await;
}

/// Watches the run's bindings; resolves when `n` of them are Ready, with the time it happened.
async fn all_ready(client: Client, run: String, n: usize) -> Instant {
    let api: Api<MlflowWorkspaceBinding> = Api::all(client);
    let cfg = watcher::Config::default().labels(&format!("{LABEL}={run}"));
    let mut events = std::pin::pin!(watcher(api, cfg).default_backoff().applied_objects());
    let mut ready = HashSet::new();
    while let Some(b) = events.try_next().await.expect("watching bindings") {
        let key = (b.namespace().unwrap_or_default(), b.name_any());
        match b.is_ready() {
            true => ready.insert(key),
            false => ready.remove(&key),
        };
        if ready.len() == n {
            return Instant::now();
        }
    }
    panic!("the binding watch ended");
}

struct Startup {
    readyz: Duration,
    patched: Duration,
    rss_kib: u64,
    /// ARM calls of the new leader, which starts with an empty cache.
    arm_calls: usize,
}

/// Starts the operator with every binding to sync; times `/readyz` and the first patched answer.
async fn startup(setup: &Setup, i: usize) -> Startup {
    let review = https::review(&setup.namespaces[i % setup.namespaces.len()], "b-0");
    let calls_before = arm_calls(&setup.fake);
    let started = Instant::now();
    let (mut op, port) = start(setup, &format!("operator (start-up {i})"));
    let readyz = async {
        loop {
            if op.get("/readyz").await.is_some_and(|(s, _)| s == 200) {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    let patched = async {
        loop {
            if https::patched(port, &setup.ca_pem, &review).await {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    let (readyz, patched) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(readyz, patched)
    })
    .await
    .expect("ready to admit within 60 s");
    let (rss_kib, _) = machine::rss_kib(op.pid());
    // The new leader resolves every workspace (its cache starts empty), then it is stopped.
    let wanted = calls_before + WORKSPACES;
    common::eventually(
        "the new leader to resolve every workspace",
        Duration::from_secs(60),
        || async { (arm_calls(&setup.fake) >= wanted).then_some(()) },
    )
    .await;
    op.terminate();
    op.wait_exit(Duration::from_secs(30)).await;
    let arm_calls = arm_calls(&setup.fake) - calls_before;
    assert_eq!(
        arm_calls, WORKSPACES,
        "a new leader: one ARM call per workspace"
    );
    Startup {
        readyz,
        patched,
        rss_kib,
        arm_calls,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn report(
    shape: &Shape,
    created: &Phase,
    resolved: &Phase,
    startups: &[Startup],
    machine: &machine::Window,
) {
    let n = shape.bindings();
    println!(
        "\n{n} bindings in {} namespaces over {WORKSPACES} workspaces; {machine}\n",
        shape.namespaces
    );
    println!("| measure | figure | goal |\n|---|---|---|");
    let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
    for (what, p) in [
        ("created while the operator runs: first create", created),
        (
            "unresolved at the operator's start: process start",
            resolved,
        ),
    ] {
        if let Some(c) = p.created {
            println!(
                "| create {n} bindings ({IN_FLIGHT} in flight) | {} | |",
                ms(c)
            );
        }
        println!(
            "| {what} -> all {n} Ready | {} | within 10 s |",
            ms(p.all_ready)
        );
        println!(
            "| {what}: ARM calls until all Ready (per workspace) | {} ({:?}) | 10 |",
            p.calls.iter().sum::<usize>(),
            p.calls
        );
        println!(
            "| {what}: operator RSS when all Ready (peak); of it anonymous / the binary's pages | {} ({}); {} / {} | at most 20 MiB |",
            mib(p.rss_kib),
            mib(p.hwm_kib),
            mib(p.split_kib.0),
            mib(p.split_kib.1)
        );
        if let Some((seen, rss)) = p.refresh {
            println!(
                "| {what}: ARM calls after one refresh ({} s interval, seen {} after the start); RSS then | {}; {} | 20 |",
                shape.refresh.as_secs(),
                ms(seen),
                2 * WORKSPACES,
                mib(rss)
            );
        }
    }
    for (i, st) in startups.iter().enumerate() {
        println!(
            "| start-up {i} with every binding Ready: process start -> /readyz 200 / first patched answer (HTTPS); RSS then; ARM calls of the new leader | {} / {}; {}; {} | within 500 ms; 10 calls |",
            ms(st.readyz),
            ms(st.patched),
            mib(st.rss_kib),
            st.arm_calls
        );
    }
}
