//! Pod counting at scale: the real `mlflow-operator run` binary against the real API server,
//! one binding per namespace, then opted-in pods created as fast as the API server takes them
//! (kept Pending by a scheduling gate, so the node runs none of them): half injected with the
//! binding's current values, a quarter stale (an older URI), a quarter never injected.
//!
//! Measured: the operator's RSS growth over its state with no pods, the time from the last pod
//! created to every binding's `status.pods` being right, and the status writes of each binding
//! (as its watch sees them). Goals, asserted: at most 10 MiB more RSS, within 10 s, at most one
//! status write per binding per 5 s.
//!
//! Full: `cargo bench --bench pods` inside the cluster (10,000 pods in 100 namespaces). Under
//! `cargo test` it is a check, not a measurement: 600 pods in 12 namespaces, the same assertions.

#[path = "support/args.rs"]
mod args;
#[path = "support/cluster.rs"]
mod cluster;
use mlflow_operator_test_support as common;
#[path = "support/machine.rs"]
mod machine;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::operator::OperatorProcess;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::PostParams;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use mlflow_operator::binding::{
    INJECTED_ANNOTATION, INJECTED_HASH_ANNOTATION, MlflowWorkspaceBinding, PodCounts, TRACK_LABEL,
};
use serde_json::json;

const LABEL: &str = "mlflow-operator.io/bench-pods";
const IN_FLIGHT: usize = 32;
const BINDING: &str = "train";
/// The controller's promise (src/controller/reconcile.rs PODS_WRITE_EVERY), less the jitter of
/// two watch deliveries.
const WRITE_EVERY: Duration = Duration::from_millis(4_500);

struct Shape {
    namespaces: usize,
    per_namespace: usize,
}

fn main() {
    let args = args::Args::parse("pods");
    if !args.selected {
        return;
    }
    let shape = match args.full {
        true => Shape {
            namespaces: 100,
            per_namespace: 100,
        },
        false => Shape {
            namespaces: 12,
            per_namespace: 50,
        },
    };
    cluster::block_on(run(shape));
}

/// Every status of the run's bindings the watch delivered: when, and the counts it held.
type Seen = Arc<Mutex<HashMap<String, Vec<(Instant, Option<PodCounts>)>>>>;

async fn run(shape: Shape) {
    let client = common::client().await;
    common::ensure_crd(&client).await;
    let before = machine::Sample::now();
    let run = common::random_suffix();
    let _cleanup = cluster::LabelledNamespaces {
        label: LABEL,
        run: run.clone(),
    };
    let namespaces = namespaces(&client, &run, shape.namespaces).await;
    let files = tempfile::tempdir().unwrap();
    let op = start(&run, &namespaces[0], files.path());
    common::eventually("the operator to lead", Duration::from_secs(60), || async {
        op.is_leader().await.filter(|l| *l)
    })
    .await;
    let hashes = counted_with_no_pods(&client, &namespaces).await;
    let (rss_before, _) = machine::rss_kib(op.pid());
    let seen = watch_statuses(&client, &run);
    // The watch's first list is not a write: it is in before the first pod is.
    common::eventually(
        "the watch to list every binding",
        Duration::from_secs(60),
        || async { (seen.lock().unwrap().len() == namespaces.len()).then_some(()) },
    )
    .await;

    let started = Instant::now();
    let expected = create_pods(&client, &namespaces, &hashes, shape.per_namespace).await;
    let created = started.elapsed();
    let last_created = Instant::now();
    let right = all_right(&seen, &expected).await;
    let (rss, hwm) = machine::rss_kib(op.pid());
    let machine = before.until(&machine::Sample::now());
    let writes = writes(&seen, started);
    let result = Result {
        pods: shape.namespaces * shape.per_namespace,
        namespaces: shape.namespaces,
        created,
        right: right.saturating_duration_since(last_created),
        growth_kib: rss.saturating_sub(rss_before),
        rss_before,
        hwm,
        writes,
    };
    result.report(&machine);
    result.assert_goals();
}

async fn namespaces(client: &Client, run: &str, n: usize) -> Vec<String> {
    let names: Vec<String> = (0..n).map(|i| format!("pods-{run}-{i}")).collect();
    let ns_api: Api<Namespace> = Api::all(client.clone());
    futures::stream::iter(names.iter())
        .for_each_concurrent(IN_FLIGHT, |name| {
            let (ns_api, client) = (ns_api.clone(), client.clone());
            async move {
                let ns = json!({"metadata": {"name": name, "labels": {LABEL: run}}});
                let ns: Namespace = serde_json::from_value(ns).unwrap();
                ns_api.create(&PostParams::default(), &ns).await.unwrap();
                let b = json!({
                    "apiVersion": "mlflow-operator.io/v1alpha1",
                    "kind": "MlflowWorkspaceBinding",
                    "metadata": {"name": BINDING},
                    "spec": {"trackingUri": format!("http://mlflow.{name}.example.invalid:5000")},
                });
                let b: MlflowWorkspaceBinding = serde_json::from_value(b).unwrap();
                let api: Api<MlflowWorkspaceBinding> = Api::namespaced(client, name);
                api.create(&PostParams::default(), &b).await.unwrap();
            }
        })
        .await;
    names
}

/// The operator binary: every namespace, its webhook on a free loopback port (no API server
/// calls it: the benchmark writes the pods' injection annotations itself).
fn start(run: &str, own_ns: &str, dir: &std::path::Path) -> OperatorProcess {
    let (cert, key, _) = common::write_loopback_certificate(dir);
    let flags = [
        format!("--kubeconfig={}", common::cluster_env("KUBECONFIG")),
        format!("--namespace={own_ns}"),
        format!("--lease-name=pods-{run}"),
        format!("--identity=pods-{run}"),
        format!("--webhook-addr=127.0.0.1:{}", common::free_port()),
        format!("--tls-cert-file={}", cert.display()),
        format!("--tls-key-file={}", key.display()),
    ];
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    OperatorProcess::start("operator (pod counting)", &args)
}

/// Waits until every binding is Ready and counts no pods; returns each one's injection hash.
async fn counted_with_no_pods(client: &Client, namespaces: &[String]) -> HashMap<String, String> {
    let mut hashes = HashMap::new();
    for ns in namespaces {
        let api: Api<MlflowWorkspaceBinding> = Api::namespaced(client.clone(), ns);
        let b = common::eventually(
            &format!("{ns}/{BINDING} Ready with its pods counted"),
            Duration::from_secs(120),
            || async {
                let b = api.get(BINDING).await.ok()?;
                let counted = b.status.as_ref()?.pods.as_ref()?.total() == 0;
                (b.is_ready() && counted).then_some(b)
            },
        )
        .await;
        hashes.insert(ns.clone(), b.injection_hash());
    }
    hashes
}

/// Records every status of the run's bindings as the watch delivers it.
fn watch_statuses(client: &Client, run: &str) -> Seen {
    let seen: Seen = Arc::default();
    let api: Api<MlflowWorkspaceBinding> = Api::all(client.clone());
    let prefix = format!("pods-{run}-");
    let record = seen.clone();
    tokio::spawn(async move {
        let stream = watcher(api, watcher::Config::default()).applied_objects();
        let mut stream = std::pin::pin!(stream);
        while let Ok(Some(b)) = stream.try_next().await {
            let ns = b.namespace().unwrap_or_default();
            if ns.starts_with(&prefix) {
                let counts = b.status.and_then(|s| s.pods);
                let mut seen = record.lock().unwrap();
                seen.entry(ns).or_default().push((Instant::now(), counts));
            }
        }
    });
    seen
}

/// Creates the pods, `IN_FLIGHT` at a time; returns the counts each binding must reach.
async fn create_pods(
    client: &Client,
    namespaces: &[String],
    hashes: &HashMap<String, String>,
    per_namespace: usize,
) -> HashMap<String, (i64, i64, i64)> {
    let work = namespaces
        .iter()
        .flat_map(|ns| (0..per_namespace).map(move |i| (ns.clone(), i)));
    futures::stream::iter(work)
        .for_each_concurrent(IN_FLIGHT, |(ns, i)| {
            let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
            let pod = pod(i, &hashes[&ns]);
            async move {
                api.create(&PostParams::default(), &pod).await.unwrap();
            }
        })
        .await;
    let (injected, stale) = (per_namespace.div_ceil(2), (per_namespace + 2) / 4);
    let not_injected = per_namespace - injected - stale;
    let counts = (injected as i64, stale as i64, not_injected as i64);
    namespaces.iter().map(|ns| (ns.clone(), counts)).collect()
}

/// Pod `i`: even ones injected with the binding's current values, one in four stale (an
/// older URI's hash), the rest not injected.
fn pod(i: usize, hash: &str) -> Pod {
    let annotations = match i % 4 {
        0 | 2 => {
            json!({INJECTED_ANNOTATION: format!("{BINDING}/1"), INJECTED_HASH_ANNOTATION: hash})
        }
        1 => {
            json!({INJECTED_ANNOTATION: format!("{BINDING}/1"), INJECTED_HASH_ANNOTATION: "0000000000000000"})
        }
        _ => json!({}),
    };
    serde_json::from_value(json!({
        "metadata": {
            "name": format!("trainer-{i}"),
            "labels": {TRACK_LABEL: "true", "app": "trainer"},
            "annotations": annotations,
        },
        "spec": {
            "schedulingGates": [{"name": "mlflow-operator.io/bench"}],
            "containers": [{"name": "train", "image": "busybox:1.35"}],
        },
    }))
    .unwrap()
}

/// When the last binding's status first held its expected counts.
async fn all_right(seen: &Seen, expected: &HashMap<String, (i64, i64, i64)>) -> Instant {
    common::eventually(
        "every binding's status.pods right",
        Duration::from_secs(120),
        || async {
            let seen = seen.lock().unwrap();
            let mut last = None;
            for (ns, want) in expected {
                let first_right = seen.get(ns)?.iter().find(|(_, c)| {
                    c.as_ref()
                        .is_some_and(|c| (c.injected, c.stale, c.not_injected) == *want)
                })?;
                last = last.max(Some(first_right.0));
            }
            last
        },
    )
    .await
}

/// Each binding's status writes since `since`: how many, and the shortest gap between two.
fn writes(seen: &Seen, since: Instant) -> Vec<(usize, Option<Duration>)> {
    let seen = seen.lock().unwrap();
    seen.values()
        .map(|all| {
            let times: Vec<Instant> = all
                .iter()
                .filter(|(t, _)| *t >= since)
                .map(|(t, _)| *t)
                .collect();
            let gap = times.windows(2).map(|w| w[1] - w[0]).min();
            (times.len(), gap)
        })
        .collect()
}

struct Result {
    pods: usize,
    namespaces: usize,
    created: Duration,
    right: Duration,
    rss_before: u64,
    growth_kib: u64,
    hwm: u64,
    writes: Vec<(usize, Option<Duration>)>,
}

impl Result {
    fn report(&self, machine: &machine::Window) {
        let (n, ns) = (self.pods, self.namespaces);
        let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
        let most = self.writes.iter().map(|w| w.0).max().unwrap_or(0);
        let gap = self.writes.iter().filter_map(|w| w.1).min();
        println!("\n{n} opted-in pods in {ns} namespaces, one binding each; {machine}\n");
        println!("| measure | figure | goal |\n|---|---|---|");
        println!(
            "| create {n} pods ({IN_FLIGHT} in flight) | {} ms | |",
            self.created.as_millis()
        );
        println!(
            "| last pod created -> every binding's status.pods right | {} ms | within 10 s |",
            self.right.as_millis()
        );
        println!(
            "| operator RSS growth over no pods (RSS before; peak) | {} ({}; {}) | at most 10 MiB |",
            mib(self.growth_kib),
            mib(self.rss_before),
            mib(self.hwm)
        );
        println!(
            "| status writes per binding over the burst (most; shortest gap) | {most}; {} | at most one per 5 s |",
            gap.map_or("-".into(), |g| format!("{} ms", g.as_millis()))
        );
    }

    fn assert_goals(&self) {
        assert!(
            self.right <= Duration::from_secs(10),
            "status.pods right after {:?}",
            self.right
        );
        assert!(
            self.growth_kib <= 10 * 1024,
            "RSS grew {} KiB",
            self.growth_kib
        );
        for (count, gap) in &self.writes {
            assert!(
                gap.is_none_or(|g| g >= WRITE_EVERY),
                "{count} writes of one binding, two within {gap:?}"
            );
        }
    }
}
