//! Issue 20, item 1: training runs that outlive their access tokens, as the node suites check
//! them (`tests/azureml_node/token_expiry.rs`, `tests/azureml_token_rotation.rs`). The fakes
//! issue tokens that live `TOKEN_LIFETIME` and ARM and the front door refuse them after that, so
//! a long run needs its client to fetch new ones as it goes. This module holds the long run's
//! Job and what its run shows: every step landed, a token fetched at least once per lifetime,
//! every fetch accepted (but one in a projected token file's re-read window), the projected
//! tokens presented.

use std::time::Duration;

use serde_json::{Value, json};

use crate::fake_cloud::{self, Call, Exchange, FakeCloud};
use crate::mlflow::Rest;
use crate::node::TRACK;
use crate::training::{container, pod_spec};

/// How long the fakes' access tokens live in the node suites (an hour in Azure): ARM and the
/// front door refuse them after that.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// train.py logs a metric every `EPOCH_SECONDS`.
pub const EPOCH_SECONDS: u64 = 5;

/// One identity mode's long run: where it runs and whose tokens it fetches.
pub struct Mode {
    pub name: &'static str,
    pub ns: String,
    pub experiment: String,
    /// `entra` or `imds`.
    pub service: &'static str,
    pub client_id: &'static str,
    pub via: &'static str,
    /// Workload identity: the ServiceAccount subject (the team's application is shared).
    pub subject: Option<String>,
    /// Workload identity with a projected token of the pod's own: its lifetime in seconds.
    pub projected: Option<u64>,
}

impl Mode {
    fn fetched_by(&self, e: &Exchange) -> bool {
        e.service == self.service
            && e.client_id == self.client_id
            && (self.subject.is_none() || e.subject == self.subject)
    }

    fn called_by(&self, c: &Call) -> bool {
        c.service == "aml"
            && c.client_id.as_deref() == Some(self.client_id)
            && (self.subject.is_none() || c.subject == self.subject)
    }
}

/// Job `train` in `ns`, its pod labelled to be injected: train.py for `epochs` epochs of
/// `EPOCH_SECONDS`, a metric each; `own_token`: a projected token of that many seconds of the
/// pod's own, as its AZURE_FEDERATED_TOKEN_FILE (the webhook leaves the variable as the
/// container set it).
pub fn long_job(ns: &str, epochs: u64, own_token: Option<u64>) -> Value {
    const OWN_DIR: &str = "/var/run/secrets/short-lived";
    let mut env = vec![
        json!({"name": "EPOCHS", "value": epochs.to_string()}),
        json!({"name": "EPOCH_SECONDS", "value": EPOCH_SECONDS.to_string()}),
    ];
    if own_token.is_some() {
        let file = format!("{OWN_DIR}/token");
        env.push(json!({"name": "AZURE_FEDERATED_TOKEN_FILE", "value": file}));
    }
    let mut c = container(json!(null), Value::Array(env));
    let mut spec = pod_spec("trainer", "Never", Value::Null);
    if let Some(seconds) = own_token {
        let mount = json!({"name": "short-lived", "mountPath": OWN_DIR, "readOnly": true});
        c["volumeMounts"].as_array_mut().unwrap().push(mount);
        spec["volumes"].as_array_mut().unwrap().push(json!({
            "name": "short-lived",
            "projected": {"sources": [{"serviceAccountToken": {
                "audience": fake_cloud::TOKEN_EXCHANGE_AUDIENCE,
                "expirationSeconds": seconds,
                "path": "token",
            }}]},
        }));
    }
    spec["containers"] = json!([c]);
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "train", "namespace": ns},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": epochs * EPOCH_SECONDS + 600,
            "template": {"metadata": {"labels": {TRACK: "true"}}, "spec": spec},
        },
    })
}

/// What one mode's run showed.
pub struct Figures {
    pub seconds: f64,
    pub steps: usize,
    pub fetched: usize,
    pub bound: usize,
    pub calls: usize,
    pub refused: usize,
    /// Fetches refused in the client's re-read window ([`in_reread_window`]).
    pub late: usize,
    /// Workload identity: the `iat`s of the distinct projected tokens presented, in order.
    pub assertions_read: Vec<i64>,
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "run {:.0} s, {} of {} steps landed; {} tokens fetched (at least {} needed), {} \
             refused in the token file's re-read window; {} front door calls, {} refused as \
             expired; {} projected tokens presented",
            self.seconds,
            self.steps,
            self.steps,
            self.fetched,
            self.bound,
            self.late,
            self.calls,
            self.refused,
            self.assertions_read.len(),
        )
    }
}

/// The run FINISHED in the mode's experiment of the server `rest` reads, with every step of
/// `loss` over at least `epochs * EPOCH_SECONDS`, and the mode's client fetched a token from
/// `cloud` at least once per token lifetime of it, each accepted.
pub async fn outlived_its_tokens(
    cloud: &FakeCloud,
    rest: &Rest,
    mode: &Mode,
    run: &Value,
    epochs: u64,
) -> Figures {
    rest.assert_run(run, &mode.experiment).await;
    let run_id = run["run_id"].as_str().unwrap();
    let stored = rest.run(run_id).await.expect("the run");
    let ms = |k: &str| stored["info"][k].as_i64().unwrap_or_default();
    let seconds = (ms("end_time") - ms("start_time")) as f64 / 1000.0;
    let logging = (epochs * EPOCH_SECONDS) as f64;
    assert!(
        seconds >= logging,
        "{}: the run lasted {seconds} s",
        mode.name
    );
    assert_every_step(rest, run_id, epochs).await;
    let (fetched, late) = fetches(cloud, mode);
    let lifetime = TOKEN_LIFETIME.as_secs_f64();
    let bound = (seconds / lifetime).floor() as usize;
    assert!(
        fetched.len() >= bound,
        "{}: {} tokens fetched over a {seconds} s run of {lifetime} s tokens: {fetched:#?}",
        mode.name,
        fetched.len()
    );
    let calls: Vec<_> = cloud
        .calls()
        .into_iter()
        .filter(|c| mode.called_by(c))
        .collect();
    let refused: Vec<_> = calls.iter().filter(|c| c.status == 401).collect();
    let expired = |c: &&Call| c.error.as_deref() == Some("ExpiredAuthenticationToken");
    assert!(refused.iter().all(expired), "{}: {refused:#?}", mode.name);
    Figures {
        seconds,
        steps: epochs as usize,
        fetched: fetched.len(),
        bound,
        calls: calls.len(),
        refused: refused.len(),
        late: late.len(),
        assertions_read: assertions_read(&fetched),
    }
}

/// The mode's token fetches: those accepted, and those refused in the re-read window, each
/// followed by a fetch that presented a newer token; every other fetch was accepted.
fn fetches(cloud: &FakeCloud, mode: &Mode) -> (Vec<Exchange>, Vec<Exchange>) {
    let (fetched, failed): (Vec<Exchange>, Vec<Exchange>) = cloud
        .exchanges()
        .into_iter()
        .filter(|e| mode.fetched_by(e) && !imds_probe(e))
        .partition(|e| e.status == 200);
    let (late, failed): (Vec<Exchange>, Vec<Exchange>) = failed
        .into_iter()
        .partition(|e| in_reread_window(e, mode.projected));
    assert!(
        failed.is_empty(),
        "{}: refused fetches {failed:#?}",
        mode.name
    );
    for e in &late {
        assert!(
            fetched
                .iter()
                .any(|f| f.at >= e.at && f.assertion_issued_at > e.assertion_issued_at),
            "{}: no later exchange presented a newer token than the refused {e:#?}",
            mode.name
        );
    }
    assert!(fetched.iter().all(|e| e.via == mode.via), "{fetched:#?}");
    (fetched, late)
}

/// How long past a projected token's `exp` azure-identity may still present it: it reads the
/// file again 600 s after its last read, which with a 600 s projection comes a few seconds after
/// the token's `exp` (RELIABILITY.md, Through token expiry).
const REREAD_SLACK: i64 = 30;

/// A fetch refused because the client presented its token file's token in that window: with a
/// projection of the pod's own, lasting `projected` s, an expired assertion refused at most
/// `REREAD_SLACK` after its `exp`. The caller asserts a later exchange presented a newer token.
pub fn in_reread_window(e: &Exchange, projected: Option<u64>) -> bool {
    let (Some(lifetime), Some(iat)) = (projected, e.assertion_issued_at) else {
        return false;
    };
    let past_exp = e.at - (iat + lifetime as i64);
    let expired = |m: &str| m.starts_with("AADSTS700024");
    e.status == 401
        && e.error.as_deref().is_some_and(expired)
        && (0..=REREAD_SLACK).contains(&past_exp)
}

/// azure-identity's first IMDS request in a credential chain: no `Metadata` header, sent to see
/// IMDS answer at all (its 400 says it is there), not to fetch a token.
fn imds_probe(e: &Exchange) -> bool {
    e.service == "imds" && e.error.as_deref() == Some("Required metadata header not specified")
}

/// The distinct `iat`s of the ServiceAccount tokens presented, in the order first seen.
fn assertions_read(fetched: &[Exchange]) -> Vec<i64> {
    let mut read: Vec<i64> = Vec::new();
    for iat in fetched.iter().filter_map(|e| e.assertion_issued_at) {
        if !read.contains(&iat) {
            read.push(iat);
        }
    }
    read
}

/// Steps 0..epochs of `loss` are in MLflow, each with train.py's value, 0.5^(step + 1).
async fn assert_every_step(rest: &Rest, run_id: &str, epochs: u64) {
    let (status, body) = rest
        .get(
            "/api/2.0/mlflow/metrics/get-history",
            &[("run_id", run_id), ("metric_key", "loss")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut landed: Vec<(i64, f64)> = body["metrics"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            (
                m["step"].as_i64().unwrap_or(-1),
                m["value"].as_f64().unwrap_or(-1.0),
            )
        })
        .collect();
    landed.sort_by_key(|(step, _)| *step);
    let steps: Vec<i64> = landed.iter().map(|(step, _)| *step).collect();
    let want: Vec<i64> = (0..epochs as i64).collect();
    assert_eq!(steps, want, "every step of run {run_id}, once");
    // The value crosses JSON twice; equal to within a few ulps, not bit for bit.
    for (step, value) in landed {
        let expected = 0.5f64.powi(step as i32 + 1);
        let close = ((value - expected) / expected).abs() < 1e-12;
        assert!(
            close,
            "step {step} of run {run_id}: {value}, not {expected}"
        );
    }
}
