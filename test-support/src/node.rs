//! Helpers for tests on the real node (`tests/cluster/up` starts a kubelet, containerd and
//! kube-proxy beside the plane): pods' readiness, the admission load
//! that counts every labelled pod, and reading a projected ServiceAccount token.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

pub const TRACK: &str = "mlflow-operator.io/track";
/// A small image with a shell, made from Debian's busybox-static (`images/build busybox`).
pub const BUSYBOX: &str = "busybox:1.35";
/// The release the node suites install, as the README names it.
pub const RELEASE: &str = "mlflow-operator";
pub const RELEASE_NS: &str = "mlflow-operator";
/// The chart's operator pods.
pub const SELECTOR: &str =
    "app.kubernetes.io/name=mlflow-operator,app.kubernetes.io/instance=mlflow-operator";
pub const MINUTE: Duration = Duration::from_secs(60);

/// `helm install` as the README tells a user, plus the local image's pull policy (there is no
/// registry) and `extra`.
pub fn install_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "install",
        RELEASE,
        crate::helm::CHART,
        "-n",
        RELEASE_NS,
        "--create-namespace",
        "--set",
        "image.pullPolicy=Never",
    ];
    args.extend_from_slice(extra);
    args
}

/// `replicas` operator pods Running and Ready, none being deleted.
pub async fn operators_ready(client: &Client, replicas: usize) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), RELEASE_NS);
    let up = |p: &Pod| is_running(p) && is_ready(p) && p.metadata.deletion_timestamp.is_none();
    pods_when(
        &pods,
        SELECTOR,
        &format!("{replicas} Ready operator pods"),
        3 * MINUTE,
        |ps| ps.len() == replicas && ps.iter().all(up),
    )
    .await
}

pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub fn is_running(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// The pods matching `selector`, once `check` holds for the whole list.
pub async fn pods_when(
    pods: &Api<Pod>,
    selector: &str,
    what: &str,
    timeout: Duration,
    check: impl Fn(&[Pod]) -> bool,
) -> Vec<Pod> {
    crate::eventually(what, timeout, || async {
        let list = pods
            .list(&ListParams::default().labels(selector))
            .await
            .ok()?;
        check(&list.items).then_some(list.items)
    })
    .await
}

/// The claims of a JWT (its middle part), without verifying it: the test only reads what the
/// kubelet put in the file.
pub fn jwt_claims(token: &str) -> Value {
    let payload = token
        .trim()
        .split('.')
        .nth(1)
        .expect("a JWT has three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url claims");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// What the admission load saw: every labelled pod it created, by outcome.
#[derive(Default, Debug)]
pub struct Tally {
    pub injected: AtomicUsize,
    /// Admitted, but without MLFLOW_TRACKING_URI: the failure that must never happen.
    pub not_injected: AtomicUsize,
    /// Refused or failed at admission (the API server's error), counted and kept.
    pub refused: AtomicUsize,
    pub errors: std::sync::Mutex<Vec<String>>,
    /// How many admitted pods got each MLFLOW_TRACKING_URI value.
    pub uris: std::sync::Mutex<std::collections::BTreeMap<String, usize>>,
}

impl Tally {
    pub fn created(&self) -> usize {
        self.injected.load(Ordering::SeqCst) + self.not_injected.load(Ordering::SeqCst)
    }
    pub fn attempts(&self) -> usize {
        self.created() + self.refused.load(Ordering::SeqCst)
    }
}

/// Creates labelled pods running as ServiceAccount `sa` in `namespace` one after another (each gated from scheduling, so they
/// cost the node nothing) until `stop` turns true, sorting each by what the webhook did.
pub fn admission_load(
    client: Client,
    namespace: &str,
    sa: &str,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (Arc<Tally>, tokio::task::JoinHandle<()>) {
    let tally = Arc::new(Tally::default());
    let pods: Api<Pod> = Api::namespaced(client, namespace);
    let t = tally.clone();
    let sa = sa.to_string();
    let task = tokio::spawn(async move {
        // Pacing, not synchronisation: about 20 creations a second.
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        while !*stop.borrow() {
            tick.tick().await;
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"generateName": "load-", "labels": {TRACK: "true"}},
                "spec": {
                    "serviceAccountName": sa,
                    "schedulingGates": [{"name": "mlflow-operator.io/never-scheduled"}],
                    "containers": [{"name": "c", "image": BUSYBOX}]
                }
            }))
            .unwrap();
            let created = pods.create(&PostParams::default(), &pod).await;
            if let Ok(p) = &created {
                *t.uris.lock().unwrap().entry(tracking_uri(p)).or_default() += 1;
            }
            match created {
                Ok(p) if has_tracking_uri(&p) => t.injected.fetch_add(1, Ordering::SeqCst),
                Ok(_) => t.not_injected.fetch_add(1, Ordering::SeqCst),
                Err(e) => {
                    t.errors.lock().unwrap().push(e.to_string());
                    t.refused.fetch_add(1, Ordering::SeqCst)
                }
            };
        }
    });
    (tally, task)
}

/// The first container's MLFLOW_TRACKING_URI value ("" when it has none).
fn tracking_uri(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers[0].env.as_ref())
        .and_then(|env| env.iter().find(|e| e.name == "MLFLOW_TRACKING_URI"))
        .and_then(|e| e.value.clone())
        .unwrap_or_default()
}

fn has_tracking_uri(pod: &Pod) -> bool {
    pod.spec.as_ref().is_some_and(|s| {
        s.containers.iter().all(|c| {
            c.env
                .iter()
                .flatten()
                .any(|e| e.name == "MLFLOW_TRACKING_URI")
        })
    })
}

/// Waits until the load has created `more` further pods (admitted or refused) after now.
pub async fn after_more_attempts(tally: &Tally, more: usize, timeout: Duration) {
    let target = tally.attempts() + more;
    crate::eventually(
        &format!("{more} more labelled pod creations"),
        timeout,
        || async { (tally.attempts() >= target).then_some(()) },
    )
    .await;
}

/// Memory and CPU of a running container, read from its cgroup (cgroup v1, as on this machine)
/// and its process: (working set bytes, RSS bytes, CPU seconds used so far).
pub fn container_usage(pod: &Pod) -> (u64, u64, f64) {
    let mem = container_cgroup(pod, "memory");
    let read = |p: std::path::PathBuf| std::fs::read_to_string(p).unwrap();
    let usage: u64 = read(mem.join("memory.usage_in_bytes"))
        .trim()
        .parse()
        .unwrap();
    let stat = read(mem.join("memory.stat"));
    let inactive: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("total_inactive_file "))
        .map_or(0, |v| v.trim().parse().unwrap());
    let pid = container_pid(pod);
    let rss_kb: u64 = read(std::path::PathBuf::from(format!("/proc/{pid}/status")))
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap())
        .unwrap();
    let cpu_ns: u64 = read(container_cgroup(pod, "cpuacct").join("cpuacct.usage"))
        .trim()
        .parse()
        .unwrap();
    (
        usage.saturating_sub(inactive),
        rss_kb * 1024,
        cpu_ns as f64 / 1e9,
    )
}

/// The cgroup directory (v1 `hierarchy`, as on this machine) of the pod's first container as
/// it runs now.
fn container_cgroup(pod: &Pod, hierarchy: &str) -> std::path::PathBuf {
    let id = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .unwrap()[0]
        .container_id
        .clone()
        .unwrap();
    let id = id.rsplit('/').next().unwrap();
    let root = format!("/sys/fs/cgroup/{hierarchy}");
    walk(std::path::Path::new(&root), id)
        .unwrap_or_else(|| panic!("no {hierarchy} cgroup for container {id}"))
}

/// The host pid of the first container's main process (the node's processes are the host's).
pub fn container_pid(pod: &Pod) -> i32 {
    std::fs::read_to_string(container_cgroup(pod, "memory").join("cgroup.procs"))
        .unwrap()
        .lines()
        .next()
        .expect("the container runs a process")
        .trim()
        .parse()
        .unwrap()
}

fn walk(dir: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let p = entry.path();
        if !p.is_dir() {
            continue;
        }
        if p.file_name().is_some_and(|n| n == name) {
            return Some(p);
        }
        if let Some(found) = walk(&p, name) {
            return Some(found);
        }
    }
    None
}

/// At a test binary's exit (from `atexit`, so blocking): uninstalls the chart's release and
/// deletes the release namespace and `namespaces`, waiting for both, so the next test binary
/// finds neither the release nor a terminating namespace.
pub fn uninstall_release(release: &str, release_ns: &str, namespaces: &[String]) {
    let _ = std::process::Command::new(crate::helm::program())
        .args([
            "uninstall",
            release,
            "-n",
            release_ns,
            "--wait",
            "--timeout=2m",
        ])
        .output();
    let mut all = namespaces.to_vec();
    all.push(release_ns.to_string());
    delete_namespaces(&all);
}

/// At a test binary's exit (from `atexit`, so blocking): deletes `namespaces`, waiting until
/// they are gone.
pub fn delete_namespaces(namespaces: &[String]) {
    if namespaces.is_empty() {
        return;
    }
    let mut args = vec![
        "delete",
        "namespace",
        "--ignore-not-found",
        "--wait",
        "--timeout=2m",
    ];
    args.extend(namespaces.iter().map(String::as_str));
    let _ = std::process::Command::new("kubectl").args(&args).output();
}

/// Waits until namespace `name` is gone: a previous run's may still be terminating.
pub async fn namespace_gone(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    crate::eventually(
        &format!("namespace {name} to be gone"),
        Duration::from_secs(120),
        || async { namespaces.get_opt(name).await.ok()?.is_none().then_some(()) },
    )
    .await;
}

/// Removes the release (and its namespace) an interrupted run left behind, and waits until the
/// namespace is gone.
pub async fn remove_leftover_release(client: &Client, release: &str, release_ns: &str) {
    let _ = crate::helm::helm(&["uninstall", release, "-n", release_ns, "--wait"]).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces.delete(release_ns, &Default::default()).await;
    namespace_gone(client, release_ns).await;
}

/// A node suite's cases share one runtime and one setup (the release, the fakes), made by the
/// first case and removed when the test process exits however the cases ended: `cargo test`
/// runs each case on its own thread, and a release per case would cost minutes.
pub struct Suite<S> {
    runtime: std::sync::LazyLock<tokio::runtime::Runtime>,
    shared: tokio::sync::OnceCell<S>,
    namespaces: std::sync::Mutex<Vec<String>>,
}

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

impl<S: Send + Sync + 'static> Default for Suite<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Send + Sync + 'static> Suite<S> {
    pub const fn new() -> Self {
        Self {
            runtime: std::sync::LazyLock::new(multi_thread),
            shared: tokio::sync::OnceCell::const_new(),
            namespaces: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Runs `body` with the shared setup, made by `setup` on first use; `at_exit` (which
    /// calls [`Suite::tear_down`]) is registered then.
    pub fn case<F, Fut>(
        &'static self,
        setup: impl Future<Output = S>,
        at_exit: extern "C" fn(),
        body: F,
    ) where
        F: FnOnce(&'static S) -> Fut,
        Fut: Future<Output = ()>,
    {
        self.runtime.block_on(async {
            let shared = self
                .shared
                .get_or_init(|| async {
                    // SAFETY: registers a plain `extern "C" fn` with the C library.
                    unsafe { libc::atexit(at_exit) };
                    setup.await
                })
                .await;
            body(shared).await
        });
    }

    /// A namespace the cases made, deleted at exit.
    pub fn remember(&self, namespace: &str) {
        let mut all = self.namespaces.lock().unwrap_or_else(|e| e.into_inner());
        all.push(namespace.to_string());
    }

    /// At exit: the shared setup, if one was made, after the release and the namespaces are
    /// gone (uninstalled and deleted, waiting for both).
    pub fn tear_down(&self) -> Option<&S> {
        let shared = self.shared.get()?;
        let namespaces = self.namespaces.lock().unwrap_or_else(|e| e.into_inner());
        uninstall_release(RELEASE, RELEASE_NS, &namespaces);
        Some(shared)
    }

    /// At exit, for a suite that installs no release (and must not remove the one another test
    /// process installed): the shared setup, if one was made, after the namespaces are gone.
    pub fn tear_down_namespaces(&self) -> Option<&S> {
        let shared = self.shared.get()?;
        let namespaces = self.namespaces.lock().unwrap_or_else(|e| e.into_inner());
        delete_namespaces(&namespaces);
        Some(shared)
    }
}
