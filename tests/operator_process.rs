//! The real `mlflow-operator run` binary, as separate processes, against the real local control
//! plane: leader election and takeover, the self-signed certificate mode end to end (controller
//! and webhook in one process, the API server calling it), graceful shutdown, readiness, and
//! start-up errors.
//!
//! Every process is scoped to its test's namespace (`--namespace`, `--watch-namespace`) and has
//! its own Lease, certificate Secret and webhook configuration names.

use mlflow_operator_test_support as common;

use std::time::{Duration, Instant};

use common::operator::{OperatorProcess, answered};
use common::webhook::{ensure_crd, env_value, register, webhook_configuration};
use common::{eventually, eventually_ok, free_port, random_suffix, with_temp_ns};
use futures::FutureExt;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use mlflow_operator::binding::MlflowWorkspaceBinding;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);
/// Well under the 5s the operator allows stoppable tasks at shutdown: nothing should hang.
const PROMPT_EXIT: Duration = Duration::from_secs(4);
const URI: &str = "http://mlflow.mlflow.svc:5000";
/// The chart's default `timeoutSeconds`: the API server gives up on the webhook after this.
const ANSWER_BUDGET: Duration = Duration::from_secs(5);

/// Flags every controller process of a test shares: its namespace, its Lease, a short lease.
fn controller_flags(ns: &str, lease: &str, identity: &str) -> Vec<String> {
    [
        format!("--namespace={ns}"),
        format!("--watch-namespace={ns}"),
        format!("--lease-name={lease}"),
        "--lease-duration=2s".to_string(),
        format!("--identity={identity}"),
    ]
    .into()
}

fn start(label: &str, flags: &[String]) -> OperatorProcess {
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    OperatorProcess::start(label, &args)
}

async fn create_binding(client: &Client, ns: &str, name: &str, uri: &str) {
    let b: MlflowWorkspaceBinding = serde_json::from_value(json!({
        "apiVersion": "mlflow-operator.io/v1alpha1", "kind": "MlflowWorkspaceBinding",
        "metadata": {"name": name},
        "spec": {"trackingUri": uri, "experimentName": "exp"}
    }))
    .unwrap();
    Api::<MlflowWorkspaceBinding>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &b)
        .await
        .expect("create binding");
}

/// Waits until the binding's status says Ready with `uri` for its current generation.
async fn wait_resolved(client: &Client, ns: &str, name: &str, uri: &str) {
    let api: Api<MlflowWorkspaceBinding> = Api::namespaced(client.clone(), ns);
    eventually(&format!("binding {name} Ready"), WAIT, || async {
        let b = api.get(name).await.ok()?;
        let status = b.status.as_ref()?;
        (b.is_ready() && status.tracking_uri.as_deref() == Some(uri)).then_some(())
    })
    .await;
}

async fn lease_holder(client: &Client, ns: &str, lease: &str) -> Option<String> {
    let lease = Api::<Lease>::namespaced(client.clone(), ns)
        .get_opt(lease)
        .await
        .expect("read the Lease")?;
    lease.spec?.holder_identity
}

/// Waits until exactly one of `procs` reports leader 1 and the others 0; returns its index.
async fn single_leader(procs: &[&OperatorProcess]) -> usize {
    eventually("exactly one leader", WAIT, || async {
        let mut states = Vec::new();
        for p in procs {
            states.push(p.is_leader().await?);
        }
        let leaders: Vec<usize> = (0..states.len()).filter(|&i| states[i]).collect();
        (leaders.len() == 1).then(|| leaders[0])
    })
    .await
}

#[tokio::test]
async fn two_operator_processes_elect_one_leader_and_the_other_takes_over_when_it_is_killed() {
    with_temp_ns("proc-elect", |client, ns| async move {
        ensure_crd(&client).await;
        let lease = format!("lease-{}", random_suffix());
        let mut procs: Vec<OperatorProcess> = ["a", "b"]
            .iter()
            .map(|id| {
                let mut flags = controller_flags(&ns, &lease, &format!("proc-{id}"));
                flags.push("--no-webhook".into());
                start(&format!("operator {id}"), &flags)
            })
            .collect();

        let leader = single_leader(&[&procs[0], &procs[1]]).await;
        let follower = 1 - leader;
        let leader_id = format!("proc-{}", ["a", "b"][leader]);
        assert_eq!(
            lease_holder(&client, &ns, &lease).await.as_deref(),
            Some(leader_id.as_str())
        );

        create_binding(&client, &ns, "before", URI).await;
        wait_resolved(&client, &ns, "before", URI).await;
        // Only the leader runs the controller.
        let reconciles = "mlflow_operator_reconciles_total";
        assert!(procs[leader].metric(reconciles).await.unwrap() >= 1.0);
        assert_eq!(procs[follower].metric(reconciles).await, Some(0.0));

        procs[leader].kill();
        let killed = Instant::now();
        eventually("the survivor to lead", WAIT, || async {
            procs[follower].is_leader().await.filter(|l| *l)
        })
        .await;
        eprintln!("takeover after SIGKILL: {:?}", killed.elapsed());
        assert_eq!(
            lease_holder(&client, &ns, &lease).await,
            Some(format!("proc-{}", ["a", "b"][follower]))
        );

        let after = "http://after.example:5000";
        create_binding(&client, &ns, "after", after).await;
        wait_resolved(&client, &ns, "after", after).await;
    })
    .await;
}

#[tokio::test]
async fn self_signed_mode_keeps_the_ca_bundle_current_and_the_api_server_calls_the_webhook() {
    with_temp_ns("proc-selfsigned", |client, ns| async move {
        ensure_crd(&client).await;
        let suffix = random_suffix();
        let (config, secret, lease) = (
            format!("mlflow-operator-proc-{suffix}"),
            format!("webhook-cert-{suffix}"),
            format!("lease-{suffix}"),
        );
        let webhook_flags = |port: u16, id: &str| {
            let mut f = controller_flags(&ns, &lease, id);
            f.extend([
                "--self-signed".into(),
                "--cert-dns-names=127.0.0.1,localhost".into(),
                format!("--webhook-config={config}"),
                format!("--cert-secret={secret}"),
                format!("--webhook-addr=127.0.0.1:{port}"),
            ]);
            f
        };
        let mwcs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
        let port = free_port();
        let url = format!("https://127.0.0.1:{port}/mutate");
        register(
            &client,
            &webhook_configuration(&config, &url, None, &ns).await,
        )
        .await;

        let outcome = std::panic::AssertUnwindSafe(async {
            let mut first = start("operator 1", &webhook_flags(port, "proc-1"));
            first.wait_status("/readyz", 200, WAIT).await;

            let s = secrets.get(&secret).await.expect("the certificate Secret");
            let data = s.data.clone().unwrap();
            for key in ["ca.crt", "tls.crt", "tls.key"] {
                assert!(data.contains_key(key), "Secret lacks {key}");
            }
            let ca = data["ca.crt"].0.clone();
            let ca_bundle = || async {
                let m = mwcs.get(&config).await.ok()?;
                m.webhooks?[0].client_config.ca_bundle.clone().map(|b| b.0)
            };
            eventually("caBundle = the Secret's ca.crt", WAIT, || async {
                ca_bundle().await.filter(|b| *b == ca)
            })
            .await;

            // The same process's controller makes the binding Ready; its webhook injects it.
            create_binding(&client, &ns, "team", URI).await;
            wait_resolved(&client, &ns, "team", URI).await;
            assert_injected(&client, &ns).await;

            // A second replica reuses the Secret: same CA and serving certificate, caBundle kept.
            let port2 = free_port();
            let mut second = start("operator 2", &webhook_flags(port2, "proc-2"));
            second.wait_status("/readyz", 200, WAIT).await;
            let again = secrets.get(&secret).await.unwrap();
            assert_eq!(again.data, s.data, "the second replica changed the Secret");
            assert_eq!(ca_bundle().await, Some(ca.clone()));

            // With the first replica gone, the API server reaches the second one, and trusts it.
            first.kill();
            let url2 = format!("https://127.0.0.1:{port2}/mutate");
            let patch =
                json!([{"op": "replace", "path": "/webhooks/0/clientConfig/url", "value": url2}]);
            mwcs.patch(
                &config,
                &PatchParams::default(),
                &Patch::<()>::Json(serde_json::from_value(patch).unwrap()),
            )
            .await
            .unwrap();
            assert_injected(&client, &ns).await;
            assert_eq!(ca_bundle().await, Some(ca));

            // SIGTERM with the webhook running too: a clean, prompt exit.
            second.terminate();
            let asked = Instant::now();
            let status = second.wait_exit(WAIT).await;
            eprintln!("webhook replica exit after SIGTERM: {:?}", asked.elapsed());
            assert!(status.success(), "{status}");
            assert!(
                asked.elapsed() < PROMPT_EXIT,
                "slow exit: {:?}",
                asked.elapsed()
            );
        })
        .catch_unwind()
        .await;
        let _ = mwcs.delete(&config, &DeleteParams::default()).await;
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    })
    .await;
}

/// Waits until a labelled pod created through the API server (dry run) comes back injected,
/// then creates one for real and checks what was stored.
async fn assert_injected(client: &Client, ns: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"generateName": "train-", "labels": {"mlflow-operator.io/track": "true"}},
        "spec": {"containers": [{"name": "train", "image": "python:3.11"}]}
    }))
    .unwrap();
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    // Retried: the API server learns of webhook configuration changes with a lag.
    let what = "the API server to call the operator's webhook";
    eventually_ok(what, WAIT, || async {
        let p = pods.create(&dry, &pod).await.map_err(|e| e.to_string())?;
        match env_value(&p, "train", "MLFLOW_TRACKING_URI") {
            Some(uri) if uri == URI => Ok(()),
            other => Err(format!("admitted with MLFLOW_TRACKING_URI {other:?}")),
        }
    })
    .await;
    let stored = pods.create(&PostParams::default(), &pod).await.unwrap();
    assert_eq!(
        env_value(&stored, "train", "MLFLOW_TRACKING_URI").as_deref(),
        Some(URI)
    );
    assert_eq!(
        env_value(&stored, "train", "MLFLOW_EXPERIMENT_NAME").as_deref(),
        Some("exp")
    );
    let injected = &stored.metadata.annotations.unwrap()["mlflow-operator.io/injected"];
    assert!(injected.starts_with("team/"), "{injected}");
}

#[tokio::test]
async fn sigterm_stops_the_operator_gracefully_and_releases_the_lease() {
    with_temp_ns("proc-sigterm", |client, ns| async move {
        ensure_crd(&client).await;
        let lease = format!("lease-{}", random_suffix());
        let flags = |id: &str| {
            let mut f = controller_flags(&ns, &lease, id);
            f.push("--no-webhook".into());
            f
        };
        let mut first = start("operator 1", &flags("proc-1"));
        eventually("operator 1 to lead", WAIT, || async {
            first.is_leader().await.filter(|l| *l)
        })
        .await;
        let second = start("operator 2", &flags("proc-2"));
        assert_eq!(single_leader(&[&first, &second]).await, 0);

        first.terminate();
        let asked = Instant::now();
        let status = first.wait_exit(Duration::from_secs(10)).await;
        eprintln!("exit after SIGTERM: {:?}", asked.elapsed());
        assert!(status.success(), "exit status {status}");
        assert!(
            asked.elapsed() < PROMPT_EXIT,
            "slow exit: {:?}",
            asked.elapsed()
        );
        // Released before exiting: the holder is cleared (or already the successor).
        let holder = lease_holder(&client, &ns, &lease).await;
        assert_ne!(
            holder.as_deref(),
            Some("proc-1"),
            "the Lease was not released"
        );
        assert!(first.output().contains("shutting down"));

        eventually("operator 2 to lead", WAIT, || async {
            second.is_leader().await.filter(|l| *l)
        })
        .await;
        eprintln!("successor leading after SIGTERM: {:?}", asked.elapsed());
        assert_eq!(
            lease_holder(&client, &ns, &lease).await.as_deref(),
            Some("proc-2")
        );
    })
    .await;
}

/// A SIGTERM that comes without a deletion (a container stopped on the node, no preStop): for
/// `--shutdown-delay` the webhook goes on answering new connections while `/readyz` says it is
/// stopping, so the readiness probe takes it out of the Service first; then it exits by itself.
#[tokio::test]
async fn sigterm_answers_while_not_ready_for_the_shutdown_delay_then_exits() {
    let dir = tempfile::tempdir().unwrap();
    let delay = Duration::from_secs(4);
    let flag = format!("--shutdown-delay={}s", delay.as_secs());
    let (mut op, ca, port) = OperatorProcess::webhook_only_with(dir.path(), &[&flag]).await;
    let tls = common::fake_tls::connector(&ca);
    answered(port, &tls, ANSWER_BUDGET)
        .await
        .expect("answered before SIGTERM");

    op.terminate();
    let signalled = Instant::now();
    let why = op.wait_status("/readyz", 503, delay).await;
    assert!(why.contains("shutting down"), "/readyz said {why:?}");
    // Every client of the delay's first three quarters is answered, over a fresh connection.
    let mut during = 0;
    while signalled.elapsed() < delay * 3 / 4 {
        let answer = answered(port, &tls, ANSWER_BUDGET).await;
        answer.unwrap_or_else(|e| {
            panic!("not answered {:?} after SIGTERM: {e}", signalled.elapsed())
        });
        during += 1;
    }
    let status = op.wait_exit(delay + Duration::from_secs(10)).await;
    let exited = signalled.elapsed();
    println!("{during} reviews answered while not ready; exited {exited:?} after SIGTERM");
    assert!(status.success(), "exit status {status}");
    assert!(
        exited >= delay,
        "exited {exited:?} after SIGTERM, before the delay"
    );
    assert!(op.output().contains("still answering admissions"));
}

/// A second SIGTERM during the delay stops the process at once.
#[tokio::test]
async fn a_second_sigterm_cuts_the_shutdown_delay_short() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--shutdown-delay=10m"];
    let (mut op, _, _) = OperatorProcess::webhook_only_with(dir.path(), &flags).await;
    op.terminate();
    op.wait_status("/readyz", 503, WAIT).await;
    let second = Instant::now();
    op.terminate();
    let status = op.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status}");
    assert!(
        second.elapsed() < PROMPT_EXIT,
        "slow exit: {:?}",
        second.elapsed()
    );
}

#[tokio::test]
async fn readiness_stays_false_without_a_certificate() {
    let client = common::client().await;
    ensure_crd(&client).await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let op = OperatorProcess::start(
        "webhook only",
        &[
            "--no-controller",
            &format!("--webhook-addr=127.0.0.1:{}", free_port()),
            &format!("--tls-cert-file={}", cert.display()),
            &format!("--tls-key-file={}", key.display()),
        ],
    );
    op.wait_status("/healthz", 200, WAIT).await;
    // Until the CRD check's first pass, /readyz names the CRD instead; the certificate's reason
    // comes once that passes and stays while no certificate is there.
    let why = eventually(
        "/readyz to answer 503 naming the certificate",
        WAIT,
        || async {
            let answer = op.get("/readyz").await;
            answer.filter(|(s, why)| *s == 503 && why.contains("certificate"))
        },
    )
    .await;
    assert_eq!(why.0, 503, "{why:?}");

    common::write_loopback_certificate(dir.path());
    op.wait_status("/readyz", 200, WAIT).await;
}

/// Runs `mlflow-operator run <args>` to completion; returns (success, stderr).
async fn run_to_exit(args: &[&str]) -> (bool, String) {
    let out = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_mlflow-operator"))
            .arg("run")
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the process exits by itself")
    .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn bad_flags_fail_with_a_clear_message() {
    let _ = common::client().await;
    let metrics = "--metrics-addr=127.0.0.1:0";
    let webhook = "--webhook-addr=127.0.0.1:0";

    let (ok, err) = run_to_exit(&[metrics, webhook, "--no-controller"]).await;
    assert!(!ok, "started without a certificate");
    assert!(
        err.contains("--tls-cert-file") && err.contains("--self-signed"),
        "{err}"
    );

    let (ok, err) = run_to_exit(&[metrics, webhook, "--tls-cert-file=/x.crt"]).await;
    assert!(!ok, "started with a certificate but no key");
    assert!(err.contains("--tls-key-file"), "{err}");

    let missing = tempfile::tempdir().unwrap().path().join("ca.pem");
    let ca_flag = format!("--azure-ca-file={}", missing.display());
    let (ok, err) = run_to_exit(&[metrics, "--no-webhook", "--namespace=default", &ca_flag]).await;
    assert!(!ok, "started with an unreadable --azure-ca-file");
    assert!(
        err.contains("--azure-ca-file") && err.contains(&missing.display().to_string()),
        "{err}"
    );
}

/// The operator's established TCP connections to `port`, read from `/proc` (its sockets' inodes
/// matched against the connection table of its network namespace).
fn connections_to(pid: u32, port: u16) -> usize {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the operator's fds")
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|l| {
            Some(
                l.to_str()?
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    ["tcp", "tcp6"]
        .iter()
        .flat_map(|t| {
            std::fs::read_to_string(format!("/proc/{pid}/net/{t}"))
                .unwrap_or_default()
                .lines()
                .skip(1)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let remote = cols[2]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            cols[3] == "01" && remote == Some(port) && inodes.contains(cols[9])
        })
        .count()
}

/// kube's own client holds one HTTP/1.1 connection per request in flight and per watch; the
/// operator's multiplexes them all as HTTP/2 streams, as client-go does. Forty bindings created
/// at once keep the controller's sixteen workers busy with status patches beside its watches.
#[tokio::test]
async fn the_operator_multiplexes_its_api_server_calls_over_one_connection() {
    with_temp_ns("proc-h2", |client, ns| async move {
        ensure_crd(&client).await;
        let port = kube::Config::infer()
            .await
            .expect("the test's kubeconfig")
            .cluster_url
            .port_u16()
            .expect("the API server's port");
        let lease = format!("lease-{}", random_suffix());
        let mut flags = controller_flags(&ns, &lease, "proc-h2");
        flags.push("--no-webhook".into());
        let operator = start("operator", &flags);
        eventually("the operator to lead", WAIT, || async {
            operator.is_leader().await.filter(|l| *l)
        })
        .await;
        let names: Vec<String> = (0..40).map(|i| format!("b{i}")).collect();
        futures::future::join_all(names.iter().map(|n| create_binding(&client, &ns, n, URI))).await;
        for n in &names {
            wait_resolved(&client, &ns, n, URI).await;
        }
        let held = connections_to(operator.pid(), port);
        assert!(
            held == 1,
            "the operator holds {held} connections to the API server (port {port}), not one"
        );
    })
    .await;
}
