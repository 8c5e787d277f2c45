//! Faults under load, on the real node with the chart installed by `helm install`: while labelled
//! pods are created continuously (each one counted: injected, admitted without injection, or
//! refused), the webhook certificate rotates three ways, an operator container is killed
//! (SIGKILL) or stopped (SIGTERM), the API server restarts, the Lease holder is killed, and ARM
//! answers 429, 500 or nothing for minutes. Every case prints its figures (`--nocapture`).
//!
//! The chart runs with short timings so the faults show within a test: the certificate Secret
//! is read every 2 s, ARM is asked again 5 s after a failure and every 10 s otherwise. The cases
//! disturb what the whole cluster shares (one release, one webhook configuration), so they run
//! one at a time on one runtime and one release, set up by the first case; when the process
//! exits the release is uninstalled and the namespaces deleted.
//!
//! `MLFLOW_OPERATOR_ARM_FAULT_SECONDS` sets how long ARM fails (default 60: twelve retry
//! periods; RELIABILITY.md's figures are from 180).

use mlflow_operator_test_support as common;

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use mlflow_operator::binding::MlflowWorkspaceBinding;
use serde_json::json;

use common::fake_azure::Reply;
use common::fake_cloud::{self, Credential, FakeCloud};
use common::faults::{
    Load, apiserver_webhook_counts, first_der, presented_cert, signal, summary, user_ca_pair,
    webhook_call_failures,
};
use common::helm::{CHART, helm_ok};
use common::node::{
    self, BUSYBOX, MINUTE, RELEASE, RELEASE_NS, SELECTOR, TRACK, container_pid, is_ready,
    operators_ready, pods_when,
};
use common::{client, ensure_crd, events_for, eventually, kubectl, random_suffix};

const SECRET: &str = "mlflow-operator-webhook-cert";
const LEASE: &str = "mlflow-operator-controller";
const WEBHOOK: &str = "pods.mlflow-operator.io";
/// The name the API server verifies the webhook's certificate for.
const SERVICE_HOST: &str = "mlflow-operator-webhook.mlflow-operator.svc";
const CA_CONFIGMAP: &str = "fake-cloud-ca";

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const OPERATOR_CLIENT: &str = "0c7d3a52-1f0e-4d8b-9a64-5e2f1b3c4d01";
const CLIENT_ID: &str = "9c6f0e4d-2f53-4f8e-9d6a-1c4f2b7e8a01";
const CLIENT_ID_AFTER: &str = "9c6f0e4d-2f53-4f8e-9d6a-1c4f2b7e8a0f";
const SUBSCRIPTION: &str = "3b0c1d2e-4f5a-4b6c-8d7e-9f0a1b2c3d4e";
const RESOURCE_GROUP: &str = "ml-rg";
const WORKSPACE: &str = "ml-ws";

/// The chart's timings for this test (`--set`).
const CERT_CHECK: Duration = Duration::from_secs(2);
const REFRESH: Duration = Duration::from_secs(10);
const ERROR_RETRY: Duration = Duration::from_secs(5);

struct Shared {
    client: Client,
    cloud: FakeCloud,
    /// A namespace with a trackingUri binding `fraud`; and one with an azureML binding `aml`.
    team: String,
    aml: String,
    aml_uri: String,
}

static SUITE: node::Suite<Shared> = node::Suite::new();
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs one case alone, on the shared runtime and release, with both operator pods Ready first.
fn case<F, Fut>(body: F)
where
    F: FnOnce(&'static Shared) -> Fut,
    Fut: Future<Output = ()>,
{
    SUITE.case(setup(), clean_up_at_exit, |shared| async move {
        let _alone = ONE_AT_A_TIME.lock().await;
        operators_ready(&shared.client, 2).await;
        // Ready pods are not yet endpoints kube-proxy routes to: the load starts once the
        // webhook answers through the Service.
        answers_in_a_row(shared, "fraud", CLIENT_ID).await;
        body(shared).await
    });
}

extern "C" fn clean_up_at_exit() {
    if SUITE.tear_down().is_some() {
        fake_cloud::unmap_hosts();
    }
}

// ---------------------------------------------------------------- the cases

/// The serving certificate re-issued from the same CA, a new CA (the Secret deleted, so the
/// operator generates another), and a CA of the user's own written into the Secret: no
/// admission fails, the caBundle carries the new CA before any replica serves its certificate,
/// every replica ends up presenting the Secret's certificate, and the old CA leaves the bundle.
#[test]
fn certificate_rotations_fail_no_admission() {
    case(|sh| async move {
        for rotation in [Rotation::Leaf, Rotation::NewCa, Rotation::UserCa] {
            rotate(sh, rotation).await;
        }
    });
}

/// An operator container killed (SIGKILL, as the OOM killer does) and one stopped (SIGTERM)
/// through their processes on the node: with failurePolicy Fail no labelled pod is admitted
/// without injection; the pods the API server refused because it could not call the webhook
/// are counted, and the API server counts the same. The stopped one refuses none: it goes on
/// answering, reported not ready, until the readiness probe has taken it out of the Service.
#[test]
fn operator_killed_or_stopped_admits_no_pod_without_injection() {
    case(|sh| async move {
        for (sig, name) in [(libc::SIGKILL, "SIGKILL"), (libc::SIGTERM, "SIGTERM")] {
            let pods = operators_ready(&sh.client, 2).await;
            // The container not restarted yet: the kubelet restarts it at once, not after a
            // crash-loop backoff.
            let victim = pods.iter().min_by_key(|p| restart_count(p)).unwrap();
            let victim_name = victim.metadata.name.clone().unwrap();
            let restarts = restart_count(victim);
            let (failed_before, calls_before) = apiserver_webhook_counts(&sh.client, WEBHOOK).await;
            let load = Load::start(&sh.client, &sh.team, "trainer");
            load.after(20).await;
            signal(container_pid(victim), sig);
            let api: Api<Pod> = Api::namespaced(sh.client.clone(), RELEASE_NS);
            pods_when(
                &api,
                SELECTOR,
                "the container restarted and Ready",
                2 * MINUTE,
                |ps| {
                    ps.len() == 2
                        && ps.iter().all(is_ready)
                        && ps.iter().any(|p| {
                            p.metadata.name.as_deref() == Some(&victim_name)
                                && restart_count(p) > restarts
                        })
                },
            )
            .await;
            load.after(20).await;
            let tally = load.finish().await;
            let (failed_after, calls_after) = apiserver_webhook_counts(&sh.client, WEBHOOK).await;
            let ours = webhook_call_failures(&tally);
            println!(
                "{name} of operator pod {victim_name}: {}; {} failed webhook calls seen by the load, {} by the API server ({} webhook calls in all)",
                summary(&tally),
                ours.len(),
                failed_after - failed_before,
                calls_after - calls_before
            );
            for e in ours.iter().take(3) {
                println!("  {e}");
            }
            assert_eq!(
                tally.not_injected.load(std::sync::atomic::Ordering::SeqCst),
                0
            );
            assert_eq!(
                tally.refused.load(std::sync::atomic::Ordering::SeqCst),
                ours.len(),
                "every refusal is a failed webhook call: {:#?}",
                tally.errors.lock().unwrap()
            );
            assert_eq!(
                failed_after - failed_before,
                ours.len() as u64,
                "the API server counts the failed calls the load saw"
            );
            if sig == libc::SIGTERM {
                assert!(ours.is_empty(), "{name}: no admission may fail: {ours:#?}");
            }
        }
    });
}

/// kube-apiserver stopped and started again (`tests/cluster/restart apiserver`) under load: the
/// controller's watch resumes (a binding created afterwards goes Ready), the webhook's caches
/// converge (that binding and a ServiceAccount annotation changed afterwards are used), the
/// existing binding is neither written nor flaps, and no Event is repeated.
#[test]
fn api_server_restart_resumes_watches_without_flapping() {
    case(|sh| async move {
        let bindings: Api<MlflowWorkspaceBinding> = Api::namespaced(sh.client.clone(), &sh.team);
        let before = bindings.get("fraud").await.unwrap();
        let events_before = events_for(&sh.client, &sh.team, "fraud").await;
        let load = Load::start(&sh.client, &sh.team, "trainer");
        load.after(20).await;

        let stopped = Instant::now();
        let restart = tokio::process::Command::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/cluster/restart"
        ))
        .arg("apiserver")
        .output()
        .await
        .expect("run tests/cluster/restart");
        let stderr = String::from_utf8_lossy(&restart.stderr);
        assert!(restart.status.success(), "restart failed: {stderr}");
        let restarted = stopped.elapsed();

        apply_binding(
            &sh.team,
            "fraud-after",
            json!({"matchLabels": {"app": "after-restart"}}),
        )
        .await;
        let created = Instant::now();
        wait_ready(&bindings, "fraud-after", "Resolved").await;
        let ready_after = created.elapsed();
        set_client_id(sh, CLIENT_ID_AFTER).await;
        // Ten answers in a row from the Service's two replicas: both caches hold both changes.
        let in_a_row = std::cell::Cell::new(0);
        eventually(
            "both webhook replicas to use the new binding and annotation",
            MINUTE,
            || async {
                let ok = dry_run_uses(sh, "fraud-after", CLIENT_ID_AFTER).await;
                in_a_row.set(if ok { in_a_row.get() + 1 } else { 0 });
                (in_a_row.get() >= 10).then_some(())
            },
        )
        .await;
        let converged = created.elapsed();
        load.after(20).await;
        let tally = load.finish().await;
        set_client_id(sh, CLIENT_ID).await;

        let after = bindings.get("fraud").await.unwrap();
        let events_after = events_for(&sh.client, &sh.team, "fraud").await;
        let new_events = events_for(&sh.client, &sh.team, "fraud-after").await;
        let _ = bindings
            .delete("fraud-after", &DeleteParams::default())
            .await;
        println!(
            "API server restart ({}): stopped to ready again {:.1} s; under load: {}; a binding created afterwards Ready in {:.1} s, both webhook replicas using it and a changed ServiceAccount annotation {:.1} s after its creation",
            stderr.lines().last().unwrap_or_default(),
            restarted.as_secs_f64(),
            summary(&tally),
            ready_after.as_secs_f64(),
            converged.as_secs_f64()
        );
        assert_eq!(
            tally.not_injected.load(std::sync::atomic::Ordering::SeqCst),
            0
        );
        // The load's pods change the pod counts (coalesced writes); nothing else may change.
        assert_eq!(
            after.status.as_ref().map(|s| s.without_pods()),
            before.status.as_ref().map(|s| s.without_pods()),
            "no status change but the pod counts"
        );
        assert_eq!(
            resolve_events(&events_after),
            resolve_events(&events_before),
            "no Event repeated"
        );
        let resolved: Vec<_> = new_events
            .iter()
            .filter(|e| e.reason.as_deref() == Some("Resolved"))
            .collect();
        assert_eq!(resolved.len(), 1, "one Resolved Event: {new_events:#?}");
        assert!(
            resolved[0].series.is_none(),
            "not repeated: {:#?}",
            resolved[0]
        );
    });
}

/// The Lease holder's process killed (SIGKILL) and its pod force-deleted, so no process of the
/// same identity comes back: another replica holds the Lease within the lease duration plus
/// one renew period of the kill.
#[test]
fn lease_holder_killed_another_replica_takes_over_within_the_lease_duration() {
    case(|sh| async move {
        let leases: Api<Lease> = Api::namespaced(sh.client.clone(), RELEASE_NS);
        let lease = leases.get(LEASE).await.unwrap().spec.unwrap();
        let holder = lease.holder_identity.clone().unwrap();
        let duration = Duration::from_secs(lease.lease_duration_seconds.unwrap() as u64);
        // The operator renews a third of the duration before expiry (src/controller.rs).
        let renew_period = duration - duration / 3;
        let pods: Api<Pod> = Api::namespaced(sh.client.clone(), RELEASE_NS);
        let pid = container_pid(&pods.get(&holder).await.unwrap());
        let load = Load::start(&sh.client, &sh.team, "trainer");
        load.after(20).await;

        let killed = jiff::Timestamp::now();
        signal(pid, libc::SIGKILL);
        let now = DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        pods.delete(&holder, &now).await.unwrap();
        let (new_holder, renewed) =
            eventually("another replica to hold the Lease", 2 * MINUTE, || async {
                let spec = leases.get(LEASE).await.ok()?.spec?;
                let h = spec.holder_identity.filter(|h| *h != holder)?;
                let renewed = spec.renew_time?.0;
                (renewed > killed).then_some((h, renewed))
            })
            .await;
        let takeover = Duration::try_from(renewed.duration_since(killed)).unwrap();
        operators_ready(&sh.client, 2).await;
        load.after(20).await;
        let tally = load.finish().await;
        println!(
            "Lease holder {holder} killed: {new_holder} renewed the Lease {:.1} s later (lease duration {} s, renew period {} s); under load: {}",
            takeover.as_secs_f64(),
            duration.as_secs(),
            renew_period.as_secs(),
            summary(&tally)
        );
        assert_eq!(
            tally.not_injected.load(std::sync::atomic::Ordering::SeqCst),
            0
        );
        assert!(
            takeover <= duration + renew_period,
            "takeover took {takeover:?}, more than {duration:?} + {renew_period:?}"
        );
    });
}

/// ARM answers every workspace GET with nothing (until the operator's timeout), 429 with
/// Retry-After, then 500, for a third of the fault window each: the azureML binding stays Ready
/// with its last good URI (the reason says the refresh is failing), labelled pods keep getting
/// that URI, the ARM calls stay under what the retry policy allows, Ready never flips, and once
/// ARM answers again the new URI shows within the error retry.
#[test]
fn arm_failing_for_minutes_keeps_the_last_good_uri_and_backs_off() {
    case(|sh| async move {
        let window = Duration::from_secs(
            std::env::var("MLFLOW_OPERATOR_ARM_FAULT_SECONDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(60),
        );
        let bindings: Api<MlflowWorkspaceBinding> = Api::namespaced(sh.client.clone(), &sh.aml);
        let good = wait_ready(&bindings, "aml", "Resolved").await;
        let since = good.ready_condition().unwrap().last_transition_time.clone();
        let (seen, watching) = watch_statuses(&bindings, "aml");
        let events_before = events_for(&sh.client, &sh.aml, "aml").await;
        let load = Load::start(&sh.client, &sh.aml, "trainer");
        load.after(20).await;

        let calls_before = arm_calls(&sh.cloud);
        let phase = window / 3;
        let start = tokio::time::Instant::now();
        let faults = [
            (
                "429 Retry-After 1",
                Reply::Throttled {
                    retry_after_secs: 1,
                },
            ),
            ("no answer", Reply::Hang),
            ("500", Reply::ServerError),
        ];
        for (i, (_, reply)) in faults.iter().enumerate() {
            sh.cloud.set_arm_reply(Some(reply.clone()));
            // The outage lasts its set length: the experiment's duration, not a wait for a state.
            tokio::time::sleep_until(start + phase * (i as u32 + 1)).await;
        }
        let calls = arm_calls(&sh.cloud) - calls_before;
        let failing = bindings.get("aml").await.unwrap();

        let moved = format!(
            "azureml://northeurope.api.azureml.ms/mlflow/v1.0/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.MachineLearningServices/workspaces/{WORKSPACE}"
        );
        sh.cloud
            .set_workspace(SUBSCRIPTION, RESOURCE_GROUP, WORKSPACE, &moved);
        sh.cloud.set_arm_reply(None);
        let answering = Instant::now();
        eventually("the new URI once ARM answers again", MINUTE, || async {
            let b = bindings.get("aml").await.ok()?;
            let resolved = b.ready_condition()?.reason == "Resolved";
            (resolved && b.status?.tracking_uri.as_deref() == Some(&moved)).then_some(())
        })
        .await;
        let recovery = answering.elapsed();
        load.after(20).await;
        let tally = load.finish().await;
        watching.abort();
        let statuses = seen.lock().unwrap().clone();
        let events_after = events_for(&sh.client, &sh.aml, "aml").await;

        // A resolve is at most 4 calls (src/controller/arm.rs RetryPolicy) and the next starts
        // ERROR_RETRY after one ends; one more may be under way when the window opens.
        let bound = 4 * (window.as_secs() / ERROR_RETRY.as_secs() + 2) as usize;
        // The next resolve starts within ERROR_RETRY; one under way retries within its backoff
        // (at most 2 s between the 3rd and 4th call), then the status write and this poll.
        let prompt = ERROR_RETRY + Duration::from_secs(2) + Duration::from_secs(3);
        let failing_ready = failing.ready_condition().unwrap().clone();
        println!(
            "ARM failing for {} s ({}, {} s each): {calls} ARM calls (bound {bound}); binding Ready={} reason {} meanwhile, {} statuses seen, all Ready with the last good URI; new URI in status {:.1} s after ARM answered again; under load: {}; URIs injected: {:?}",
            window.as_secs(),
            faults.iter().map(|f| f.0).collect::<Vec<_>>().join(", "),
            phase.as_secs(),
            failing_ready.status,
            failing_ready.reason,
            statuses.len(),
            recovery.as_secs_f64(),
            summary(&tally),
            tally.uris.lock().unwrap()
        );
        assert_eq!(
            (failing_ready.status.as_str(), failing_ready.reason.as_str()),
            ("True", "RefreshFailing"),
            "{}",
            failing_ready.message
        );
        for s in statuses.iter().filter(|s| s.1 != moved) {
            assert_eq!(s.0, "True", "Ready never flips: {statuses:#?}");
            assert_eq!(s.1, sh.aml_uri, "the last good URI is kept: {statuses:#?}");
            assert_eq!(s.2, since, "no Ready transition: {statuses:#?}");
        }
        assert!(
            statuses.iter().any(|s| s.3 == "RefreshFailing"),
            "{statuses:#?}"
        );
        assert_eq!(
            tally.not_injected.load(std::sync::atomic::Ordering::SeqCst),
            0
        );
        assert_eq!(
            tally.refused.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "pods keep being injected: {:#?}",
            tally.errors.lock().unwrap()
        );
        let uris = tally.uris.lock().unwrap().clone();
        assert!(
            uris.keys().all(|u| *u == sh.aml_uri || *u == moved),
            "only the last good URI, then the new one: {uris:?}"
        );
        assert!(calls >= 2, "it kept trying: {calls} calls");
        assert!(
            calls <= bound,
            "{calls} ARM calls in {window:?}, more than {bound}"
        );
        assert!(
            recovery <= prompt,
            "recovery took {recovery:?}, more than {prompt:?}"
        );
        assert_eq!(
            resolve_events(&events_after),
            resolve_events(&events_before),
            "no Ready Event: Ready never flipped"
        );
        // The pods injected before the move carry the old URI: the binding says they are stale.
        assert!(
            events_after
                .iter()
                .any(|e| e.reason.as_deref() == Some("PodsStale")),
            "a PodsStale Event once the URI moved: {events_after:#?}"
        );
    });
}

/// The (reason, note, count) of the binding's resolve Events; pod count Events left out.
fn resolve_events(events: &[Event]) -> Vec<(Option<String>, Option<String>, Option<i32>)> {
    events
        .iter()
        .filter(|e| e.action.as_deref() == Some("Resolve"))
        .map(|e| {
            let count = e.series.as_ref().map(|s| s.count);
            (e.reason.clone(), e.note.clone(), count)
        })
        .collect()
}

// ---------------------------------------------------------------- certificate rotation

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rotation {
    /// The expiry annotation set to the past: the operator re-issues from the same CA.
    Leaf,
    /// The Secret deleted: the operator generates a new CA and certificate.
    NewCa,
    /// A CA of the user's own and a certificate it signed written into the Secret.
    UserCa,
}

async fn rotate(sh: &Shared, rotation: Rotation) {
    let secrets: Api<Secret> = Api::namespaced(sh.client.clone(), RELEASE_NS);
    let before = secrets.get(SECRET).await.unwrap();
    let (old_cert, old_ca) = (data(&before, "tls.crt"), data(&before, "ca.crt"));
    let load = Load::start(&sh.client, &sh.team, "trainer");
    load.after(20).await;
    let proven_before = trust_proven(&sh.client).await;
    let started = Instant::now();
    let user_ca = change_secret(&secrets, rotation).await;
    // (The operator may re-issue what was written: the replicas are compared with the Secret
    // as it is then.)
    let ca = eventually("a new certificate in the Secret", MINUTE, || async {
        let s = secrets.get_opt(SECRET).await.ok()??;
        let cert = data(&s, "tls.crt");
        (!cert.is_empty() && cert != old_cert).then(|| data(&s, "ca.crt"))
    })
    .await;
    match &user_ca {
        Some(user) => assert_eq!(ca.trim(), user.trim(), "the operator keeps the user's CA"),
        None if rotation == Rotation::Leaf => assert_eq!(ca, old_ca),
        None => assert_ne!(ca, old_ca),
    }
    let pods = operators_ready(&sh.client, 2).await;
    eventually(
        "every replica to present the Secret's certificate",
        MINUTE,
        || async {
            let now = data(&secrets.get(SECRET).await.ok()?, "tls.crt");
            let bundle = ca_bundle(&sh.client).await?;
            for p in &pods {
                let ip = p.status.as_ref()?.pod_ip.clone()?;
                let addr = format!("{ip}:9443");
                // Trusted by the caBundle, as the API server checks it, and by the new CA alone.
                let served = presented_cert(&addr, &bundle, SERVICE_HOST).await.ok()?;
                presented_cert(&addr, ca.as_bytes(), SERVICE_HOST)
                    .await
                    .ok()?;
                (served == first_der(&now)).then_some(())?;
            }
            Some(())
        },
    )
    .await;
    let served_after = started.elapsed();
    if rotation != Rotation::Leaf {
        // Each replica served the new CA's certificate on the evidence of its CA probe.
        eventually(
            "each replica's evidence that the API server trusts the new CA",
            MINUTE,
            || async {
                let proven = trust_proven(&sh.client).await;
                (proven.len() == 2
                    && proven
                        .iter()
                        .all(|(pod, n)| *n > proven_before.get(pod).copied().unwrap_or(0)))
                .then_some(())
            },
        )
        .await;
    }
    let bundle = ca_bundle(&sh.client).await.unwrap();
    let both = String::from_utf8_lossy(&bundle).contains(old_ca.trim());
    load.after(20).await;
    // Once every replica serves the new CA's certificate, the old CA leaves the bundle.
    eventually("the caBundle to hold the new CA only", MINUTE, || async {
        let bundle = ca_bundle(&sh.client).await?;
        (String::from_utf8_lossy(&bundle).trim() == ca.trim()).then_some(())
    })
    .await;
    let cleaned_after = started.elapsed();
    let tally = load.finish().await;
    println!(
        "certificate rotation {rotation:?}: both replicas served the new certificate after {:.1} s (old CA still in caBundle then: {both}), caBundle = new CA only after {:.1} s; under load: {}",
        served_after.as_secs_f64(),
        cleaned_after.as_secs_f64(),
        summary(&tally)
    );
    let errors = tally.errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "admissions failed: {errors:#?}");
    assert_eq!(
        tally.not_injected.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

/// For each operator pod, how many times its log says the API server was shown to trust a new
/// CA (through the CA probe) before the pod served it.
async fn trust_proven(client: &Client) -> std::collections::BTreeMap<String, usize> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), RELEASE_NS);
    let mut proven = std::collections::BTreeMap::new();
    let list = pods
        .list(&kube::api::ListParams::default().labels(SELECTOR))
        .await;
    for pod in list.map(|l| l.items).unwrap_or_default() {
        let name = pod.metadata.name.unwrap_or_default();
        let log = pods
            .logs(&name, &Default::default())
            .await
            .unwrap_or_default();
        proven.insert(
            name,
            log.matches("the API server trusts the new CA").count(),
        );
    }
    proven
}

/// Makes the operator rotate; returns the user's CA when one was written in.
async fn change_secret(secrets: &Api<Secret>, rotation: Rotation) -> Option<String> {
    match rotation {
        Rotation::Leaf => {
            let expired =
                json!({"metadata": {"annotations": {"mlflow-operator.io/not-after": "0"}}});
            secrets
                .patch(SECRET, &PatchParams::default(), &Patch::Merge(&expired))
                .await
                .unwrap();
            None
        }
        Rotation::NewCa => {
            secrets
                .delete(SECRET, &DeleteParams::default())
                .await
                .unwrap();
            None
        }
        Rotation::UserCa => {
            let names = vec![SERVICE_HOST.to_string()];
            let (ca, ca_key, cert, key) = user_ca_pair(&names);
            let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
            // As `kubectl apply` of a Secret written by hand would: the four keys, no annotation.
            let written = json!({
                "metadata": {"annotations": {"mlflow-operator.io/not-after": null}},
                "data": {"ca.crt": b64(&ca), "ca.key": b64(&ca_key), "tls.crt": b64(&cert), "tls.key": b64(&key)},
            });
            secrets
                .patch(SECRET, &PatchParams::default(), &Patch::Merge(&written))
                .await
                .unwrap();
            Some(ca)
        }
    }
}

fn data(s: &Secret, key: &str) -> String {
    s.data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .unwrap_or_default()
}

async fn ca_bundle(client: &Client) -> Option<Vec<u8>> {
    let mwcs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let mwc = mwcs.get(RELEASE).await.ok()?;
    Some(mwc.webhooks?.first()?.client_config.ca_bundle.clone()?.0)
}

// ---------------------------------------------------------------- helpers

fn restart_count(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(0, |cs| cs[0].restart_count)
}

/// Ten dry-run pods in a row, spread by the Service over both replicas, injected from `binding`
/// with `client_id` (so both replicas' caches hold them).
async fn answers_in_a_row(sh: &Shared, binding: &str, client_id: &str) {
    let in_a_row = std::cell::Cell::new(0);
    let what =
        format!("the webhook to inject from {binding} with client id {client_id}, 10 in a row");
    eventually(&what, MINUTE, || async {
        let ok = dry_run_uses(sh, binding, client_id).await;
        in_a_row.set(if ok { in_a_row.get() + 1 } else { 0 });
        (in_a_row.get() >= 10).then_some(())
    })
    .await;
}

/// Whether a dry-run pod naming `binding` gets the binding and `client_id`.
async fn dry_run_uses(sh: &Shared, binding: &str, client_id: &str) -> bool {
    let pods: Api<Pod> = Api::namespaced(sh.client.clone(), &sh.team);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {
            "generateName": "probe-",
            "labels": {TRACK: "true", "app": "after-restart"},
            "annotations": {"mlflow-operator.io/binding": binding},
        },
        "spec": {"serviceAccountName": "trainer", "containers": [{"name": "c", "image": BUSYBOX}]}
    }))
    .unwrap();
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let Ok(p) = pods.create(&dry, &pod).await else {
        return false;
    };
    let injected = p
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("mlflow-operator.io/injected"))
        .is_some_and(|v| v.starts_with(&format!("{binding}/")));
    let env = p
        .spec
        .and_then(|s| s.containers[0].env.clone())
        .unwrap_or_default();
    injected
        && env
            .iter()
            .any(|e| e.name == "AZURE_CLIENT_ID" && e.value.as_deref() == Some(client_id))
}

async fn set_client_id(sh: &Shared, client_id: &str) {
    let sas: Api<ServiceAccount> = Api::namespaced(sh.client.clone(), &sh.team);
    let patch =
        json!({"metadata": {"annotations": {"azure.workload.identity/client-id": client_id}}});
    sas.patch("trainer", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// One status of a binding: (Ready status, tracking URI, Ready lastTransitionTime, Ready reason).
type Seen = (
    String,
    String,
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    String,
);

/// Every status of binding `name` the API server reports from now on (abort the task to stop).
fn watch_statuses(
    api: &Api<MlflowWorkspaceBinding>,
    name: &str,
) -> (
    std::sync::Arc<Mutex<Vec<Seen>>>,
    tokio::task::JoinHandle<()>,
) {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
    let (into, api) = (seen.clone(), api.clone());
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(watcher(api, cfg).default_backoff().applied_objects());
        while let Some(Ok(b)) = stream.next().await {
            let Some(c) = b.ready_condition().cloned() else {
                continue;
            };
            let uri = b.status.and_then(|s| s.tracking_uri).unwrap_or_default();
            into.lock()
                .unwrap()
                .push((c.status, uri, c.last_transition_time, c.reason));
        }
    });
    (seen, task)
}

fn arm_calls(cloud: &FakeCloud) -> usize {
    cloud.calls().iter().filter(|c| c.service == "arm").count()
}

/// The binding once Ready with `reason` for its current generation.
async fn wait_ready(
    api: &Api<MlflowWorkspaceBinding>,
    name: &str,
    reason: &str,
) -> MlflowWorkspaceBinding {
    eventually(
        &format!("binding {name} Ready ({reason})"),
        2 * MINUTE,
        || async {
            let b = api.get(name).await.ok()?;
            let c = b.ready_condition()?;
            let current = b.status.as_ref()?.observed_generation == b.metadata.generation;
            (current && c.status == "True" && c.reason == reason).then_some(b.clone())
        },
    )
    .await
}

async fn apply_binding(ns: &str, name: &str, selector: serde_json::Value) {
    let b = json!({
        "apiVersion": "mlflow-operator.io/v1alpha1",
        "kind": "MlflowWorkspaceBinding",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "trackingUri": "http://mlflow.example.invalid:5000",
            "experimentName": "fraud-detection",
            "podSelector": selector,
            "identity": {"workloadIdentity": {"tenantId": TENANT}},
        },
    });
    kubectl(&["apply", "-f", "-"], &b.to_string()).await;
}

// ---------------------------------------------------------------- setup

async fn setup() -> Shared {
    let client = client().await;
    ensure_crd(&client).await;
    node::remove_leftover_release(&client, RELEASE, RELEASE_NS).await;

    // The MLflow front door is not used here: no server behind it.
    let cloud = FakeCloud::start(client.clone(), "http://127.0.0.1:9").await;
    fake_cloud::map_hosts().await;
    let aml_uri = cloud.add_workspace(SUBSCRIPTION, RESOURCE_GROUP, WORKSPACE);
    let operator_subject = format!("system:serviceaccount:{RELEASE_NS}:{RELEASE}");
    cloud.register_app(
        TENANT,
        OPERATOR_CLIENT,
        Credential::Federated(vec![operator_subject]),
    );

    create_namespace(
        &client,
        RELEASE_NS,
        json!({"pod-security.kubernetes.io/enforce": "restricted"}),
    )
    .await;
    fake_cloud::ca_configmap(&client, RELEASE_NS, CA_CONFIGMAP, &cloud.ca_pem).await;
    let secs = |d: Duration| format!("{}s", d.as_secs());
    let sets = [
        "image.pullPolicy=Never".to_string(),
        format!("azure.workloadIdentity.clientId={OPERATOR_CLIENT}"),
        format!("azure.workloadIdentity.tenantId={TENANT}"),
        format!("azure.caConfigMap.name={CA_CONFIGMAP}"),
        format!("controller.refreshInterval={}", secs(REFRESH)),
        format!("controller.errorRetry={}", secs(ERROR_RETRY)),
        format!(
            "webhook.certificates.selfManaged.checkInterval={}",
            secs(CERT_CHECK)
        ),
        // The old CA stays in the caBundle for twice the check interval plus this: the
        // rotation case waits for it to leave.
        "webhook.certificates.selfManaged.probeTimeout=5s".to_string(),
    ];
    let mut args = vec!["install", RELEASE, CHART, "-n", RELEASE_NS];
    for s in &sets {
        args.extend(["--set", s.as_str()]);
    }
    helm_ok(&args).await;

    let suffix = random_suffix();
    let (team, aml) = (format!("faults-{suffix}"), format!("faults-aml-{suffix}"));
    for ns in [&team, &aml] {
        SUITE.remember(ns);
        create_namespace(&client, ns, json!({"mlflow-operator.io/test": "true"})).await;
        let sa = json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "trainer", "namespace": ns,
                         "annotations": {"azure.workload.identity/client-id": CLIENT_ID}},
        });
        kubectl(&["apply", "-f", "-"], &sa.to_string()).await;
    }
    let shared = Shared {
        client: client.clone(),
        cloud,
        team: team.clone(),
        aml: aml.clone(),
        aml_uri,
    };
    apply_binding(&team, "fraud", json!({})).await;
    let b = json!({
        "apiVersion": "mlflow-operator.io/v1alpha1",
        "kind": "MlflowWorkspaceBinding",
        "metadata": {"name": "aml", "namespace": aml},
        "spec": {
            "azureML": {"subscriptionId": SUBSCRIPTION, "resourceGroup": RESOURCE_GROUP, "workspaceName": WORKSPACE},
            "identity": {"workloadIdentity": {"tenantId": TENANT}},
        },
    });
    kubectl(&["apply", "-f", "-"], &b.to_string()).await;
    operators_ready(&client, 2).await;
    for ns in [&team, &aml] {
        let api: Api<MlflowWorkspaceBinding> = Api::namespaced(client.clone(), ns);
        let name = if *ns == team { "fraud" } else { "aml" };
        wait_ready(&api, name, "Resolved").await;
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
        eventually("the namespace's default ServiceAccount", MINUTE, || async {
            sas.get_opt("default").await.ok().flatten()
        })
        .await;
    }
    shared
}

async fn create_namespace(client: &Client, name: &str, labels: serde_json::Value) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
}
