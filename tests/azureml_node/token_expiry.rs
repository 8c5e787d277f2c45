//! Issue 20, item 1: training runs that outlive their access tokens. The suite's fakes issue
//! tokens that live `TOKEN_LIFETIME` (a minute) and ARM and the front door refuse them after
//! that, so a run of five minutes needs its client to fetch new ones as it goes: workload
//! identity (azure-identity's own client, a new token once 30 s have passed, the projected
//! token file re-read every 600 s), service principals and managed identity (MSAL, which treats
//! a token with under five minutes left as expired, so with one-minute tokens it fetches one
//! for each call).
//!
//! The kubelet rotates a projected ServiceAccount token at about 80% of its lifetime. The API
//! server refuses a projected token of under 600 s (and `--service-account-max-token-expiration`
//! cannot go below an hour), and a binding's `tokenExpirationSeconds` is 3600..86400, so the
//! operator's own projection rotates after 48 minutes at the soonest. The rotation run (12.5
//! minutes, beside the suite's other cases) therefore mounts a 600 s projection of its own and points
//! `AZURE_FEDERATED_TOKEN_FILE` at it, which the webhook leaves as the container set it; the
//! kubelet rotates it after about 480 s, and azure-identity reads the file again 600 s after its
//! first read.

use super::*;

/// A metric every 5 s for 60 epochs: five minutes of logging.
const EPOCH_SECONDS: u64 = 5;
const EPOCHS: u64 = 60;
/// The rotation run: 150 epochs, 12.5 minutes, past the first rotation and re-read.
const ROTATION_EPOCHS: u64 = 150;
/// The API server's shortest projected token.
const SHORTEST_PROJECTED_TOKEN: u64 = 600;

const LONG_SP_SECRET_CLIENT: &str = "4a1d7e0f-6b2c-4d8e-9f0a-1b2c3d4e5f10";
const LONG_SP_CERT_CLIENT: &str = "3f0c6d9e-5a1b-4c7d-8e9f-0a1b2c3d4e11";
const LONG_MI_CLIENT: &str = "2e9b5c8d-4f0a-4b6c-9d8e-9f0a1b2c3d12";
/// The application the test itself takes a token for, to see it refused once expired.
const PROBE_CLIENT: &str = "1d8a4b7c-3e9f-4a5b-8c7d-8e9f0a1b2c13";

/// One identity mode's long run: where it runs and whose tokens it fetches.
struct Mode {
    name: &'static str,
    ns: String,
    experiment: String,
    /// `entra` or `imds`.
    service: &'static str,
    client_id: &'static str,
    via: &'static str,
    /// Workload identity: the ServiceAccount subject (the team's application is shared).
    subject: Option<String>,
    /// Workload identity with a projected token of the pod's own: its lifetime in seconds.
    projected: Option<u64>,
}

impl Mode {
    fn fetched_by(&self, e: &Exchange) -> bool {
        e.service == self.service
            && e.client_id == self.client_id
            && (self.subject.is_none() || e.subject == self.subject)
    }

    fn called_by(&self, c: &fake_cloud::Call) -> bool {
        c.service == "aml"
            && c.client_id.as_deref() == Some(self.client_id)
            && (self.subject.is_none() || c.subject == self.subject)
    }
}

/// In every identity mode at once, a labelled Job logs a metric every 5 s for five minutes
/// through the Azure ML front door with one-minute tokens: every step lands, the run finishes,
/// each client fetched at least one token per lifetime its run lasted, every fetch succeeded,
/// and a token the test took at the start is refused by ARM and the front door by the end.
/// The case itself is at the suite's root (`a_five_minute_run_...`), so that it starts first.
pub(super) fn five_minute_run_in_every_identity_mode() {
    case(|sh| async move {
        let probe = Probe::take(sh).await;
        let started = std::time::Instant::now();
        let modes = futures::join!(
            workload_identity(sh, None),
            secret(sh),
            certificate(sh),
            managed(sh),
        );
        let modes = [modes.0, modes.1, modes.2, modes.3];
        for mode in &modes {
            long_job(mode, EPOCHS, None).await;
        }
        let deadline = Duration::from_secs(EPOCHS * EPOCH_SECONDS) + 5 * MINUTE;
        let runs = futures::future::join_all(
            modes
                .iter()
                .map(|m| trained_within(sh, &m.ns, "job-name=train", deadline)),
        )
        .await;
        for (mode, run) in modes.iter().zip(&runs) {
            let figures = outlived_its_tokens(sh, mode, run, EPOCHS).await;
            println!("{}: {figures}", mode.name);
        }
        println!(
            "long runs: {:.0} s from the first binding",
            started.elapsed().as_secs_f64()
        );
        probe.assert_refused_once_expired(sh).await;
    });
}

/// Workload identity across a kubelet rotation of its projected token (600 s, its own volume:
/// see the module's comment): every step of a 12.5-minute run lands and Entra ID saw the
/// client present a second, rotated ServiceAccount token. The case itself is at the suite's
/// root (`a_12_minute_run_...`), so that it starts first.
pub(super) fn workload_identity_outlives_a_kubelet_rotation_of_its_projected_token() {
    case(|sh| async move {
        let mode = workload_identity(sh, Some(SHORTEST_PROJECTED_TOKEN)).await;
        long_job(&mode, ROTATION_EPOCHS, Some(SHORTEST_PROJECTED_TOKEN)).await;
        let deadline = Duration::from_secs(ROTATION_EPOCHS * EPOCH_SECONDS) + 5 * MINUTE;
        let run = trained_within(sh, &mode.ns, "job-name=train", deadline).await;
        let figures = outlived_its_tokens(sh, &mode, &run, ROTATION_EPOCHS).await;
        println!("{}: {figures}", mode.name);
        let read = figures.assertions_read;
        assert!(
            read.len() >= 2,
            "the client must have presented the rotated projected token; it presented tokens issued at {read:?}"
        );
        let rotated_after = read[1] - read[0];
        assert!(
            rotated_after < SHORTEST_PROJECTED_TOKEN as i64,
            "the kubelet rotates before expiry: {rotated_after} s"
        );
    });
}

// ---------------------------------------------------------------- the modes

/// The team's application federated with the namespace's `trainer`; `own_token`: the pod
/// projects its own token of that many seconds.
async fn workload_identity(sh: &Shared, own_token: Option<u64>) -> Mode {
    let name = if own_token.is_some() {
        "rotation"
    } else {
        "long-wi"
    };
    let (ns, experiment) = team(sh, name).await;
    let identity = federated_team_identity(sh, &ns);
    azureml_binding(sh, &ns, &experiment, identity).await;
    let subject = Some(trainer_subject(&ns));
    Mode {
        name: "workload identity",
        ns,
        experiment,
        service: "entra",
        client_id: TEAM_CLIENT,
        via: "federated",
        subject,
        projected: own_token,
    }
}

async fn secret(sh: &Shared) -> Mode {
    let (ns, experiment) = team(sh, "long-sp-secret").await;
    let secret = format!("long-s3cr3t~{}", random_suffix());
    let identity = secret_identity(sh, &ns, LONG_SP_SECRET_CLIENT, &secret, &secret).await;
    azureml_binding(sh, &ns, &experiment, identity).await;
    Mode {
        name: "service principal (secret)",
        ns,
        experiment,
        service: "entra",
        client_id: LONG_SP_SECRET_CLIENT,
        via: "client_secret",
        subject: None,
        projected: None,
    }
}

async fn certificate(sh: &Shared) -> Mode {
    let (ns, experiment) = team(sh, "long-sp-cert").await;
    let (pem, credential) = fake_cloud::service_principal_certificate(LONG_SP_CERT_CLIENT);
    sh.cloud
        .register_app(TENANT, LONG_SP_CERT_CLIENT, credential);
    create_secret(sh, &ns, "sp-cert", &[("tls.pem", &pem)]).await;
    let identity = json!({"servicePrincipal": {
        "clientId": LONG_SP_CERT_CLIENT, "tenantId": TENANT,
        "certificateSecretRef": {"name": "sp-cert", "key": "tls.pem"},
    }});
    azureml_binding(sh, &ns, &experiment, identity).await;
    Mode {
        name: "service principal (certificate)",
        ns,
        experiment,
        service: "entra",
        client_id: LONG_SP_CERT_CLIENT,
        via: "certificate",
        subject: None,
        projected: None,
    }
}

async fn managed(sh: &Shared) -> Mode {
    let (ns, experiment) = team(sh, "long-mi").await;
    sh.cloud.register_managed_identity(TENANT, LONG_MI_CLIENT);
    let identity = json!({"managedIdentity": {"clientId": LONG_MI_CLIENT}});
    azureml_binding(sh, &ns, &experiment, identity).await;
    Mode {
        name: "managed identity",
        ns,
        experiment,
        service: "imds",
        client_id: LONG_MI_CLIENT,
        via: "managed_identity",
        subject: None,
        projected: None,
    }
}

/// Job `train`: train.py for `epochs` epochs of `EPOCH_SECONDS`, a metric each; `own_token`:
/// a projected token of that many seconds of the pod's own, as its AZURE_FEDERATED_TOKEN_FILE.
async fn long_job(mode: &Mode, epochs: u64, own_token: Option<u64>) {
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
    let job = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "train", "namespace": mode.ns},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": epochs * EPOCH_SECONDS + 600,
            "template": {"metadata": {"labels": {TRACK: "true"}}, "spec": spec},
        },
    });
    kubectl(&["apply", "-f", "-"], &job.to_string()).await;
}

// ---------------------------------------------------------------- what a run shows

/// What one mode's run showed.
struct Figures {
    seconds: f64,
    steps: usize,
    fetched: usize,
    bound: usize,
    calls: usize,
    refused: usize,
    /// Fetches refused in the client's re-read window ([`in_reread_window`]).
    late: usize,
    /// Workload identity: the `iat`s of the distinct projected tokens presented, in order.
    assertions_read: Vec<i64>,
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

/// The run FINISHED with every step of `loss` over at least `epochs * EPOCH_SECONDS`, and the
/// mode's client fetched a token at least once per token lifetime of it, each accepted.
async fn outlived_its_tokens(sh: &Shared, mode: &Mode, run: &Value, epochs: u64) -> Figures {
    let rest = Rest::local(&sh.server);
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
    assert_every_step(&rest, run_id, epochs).await;

    let exchanges: Vec<Exchange> = sh.cloud.exchanges();
    let (fetched, failed): (Vec<Exchange>, Vec<Exchange>) = exchanges
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
    let lifetime = TOKEN_LIFETIME.as_secs_f64();
    let bound = (seconds / lifetime).floor() as usize;
    assert!(
        fetched.len() >= bound,
        "{}: {} tokens fetched over a {seconds} s run of {lifetime} s tokens: {fetched:#?}",
        mode.name,
        fetched.len()
    );
    let calls: Vec<_> = sh
        .cloud
        .calls()
        .into_iter()
        .filter(|c| mode.called_by(c))
        .collect();
    let refused: Vec<_> = calls.iter().filter(|c| c.status == 401).collect();
    let expired = |c: &&fake_cloud::Call| c.error.as_deref() == Some("ExpiredAuthenticationToken");
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

/// How long past a projected token's `exp` azure-identity may still present it: it reads the
/// file again 600 s after its last read, which with a 600 s projection comes a few seconds after
/// the token's `exp` (RELIABILITY.md, Through token expiry).
const REREAD_SLACK: i64 = 30;

/// A fetch refused because the client presented its token file's token in that window: with a
/// projection of the pod's own, lasting `projected` s, an expired assertion refused at most
/// `REREAD_SLACK` after its `exp`. The caller asserts a later exchange presented a newer token.
fn in_reread_window(e: &Exchange, projected: Option<u64>) -> bool {
    let (Some(lifetime), Some(iat)) = (projected, e.assertion_issued_at) else {
        return false;
    };
    let past_exp = e.at - (iat + lifetime as i64);
    let expired = |m: &str| m.starts_with("AADSTS700024");
    e.status == 401
        && e.error.as_deref().is_some_and(expired)
        && (0..=REREAD_SLACK).contains(&past_exp)
}

#[test]
fn a_refusal_is_in_the_reread_window_only_just_past_exp_of_the_pods_own_token() {
    let expired = "AADSTS700024: Client assertion is not within its valid time range.";
    // (case, projected, seconds from iat, status, error, in the window)
    for (case, projected, after_iat, status, error, want) in [
        ("1 s past exp", Some(600), 601, 401, expired, true),
        ("at exp", Some(600), 600, 401, expired, true),
        ("30 s past exp", Some(600), 630, 401, expired, true),
        ("31 s past exp", Some(600), 631, 401, expired, false),
        ("before exp", Some(600), 599, 401, expired, false),
        ("the operator's projection", None, 3601, 401, expired, false),
        (
            "another refusal",
            Some(600),
            601,
            401,
            "AADSTS70021: no match",
            false,
        ),
        ("accepted", Some(600), 601, 200, "", false),
    ] {
        let e = Exchange {
            service: "entra",
            tenant: TENANT.to_string(),
            client_id: TEAM_CLIENT.to_string(),
            via: "federated".to_string(),
            subject: None,
            status,
            error: Some(error.to_string()).filter(|e| !e.is_empty()),
            at: 1_000 + after_iat,
            assertion_issued_at: Some(1_000),
        };
        assert_eq!(in_reread_window(&e, projected), want, "{case}");
    }
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

// ---------------------------------------------------------------- the test's own token

/// An access token the test takes from the fake Entra ID (client secret) at the start of the
/// long runs, used at once and again after them.
struct Probe {
    token: String,
    http: reqwest::Client,
}

fn fakes_client(sh: &Shared) -> reqwest::Client {
    mlflow_operator::install_crypto_provider();
    let ca = reqwest::Certificate::from_pem(sh.cloud.ca_pem.as_bytes()).unwrap();
    let at = |ip: &str| std::net::SocketAddr::new(ip.parse().unwrap(), 443);
    reqwest::Client::builder()
        .add_root_certificate(ca)
        .resolve(fake_cloud::ENTRA_HOST, at(fake_cloud::ENTRA_IP))
        .resolve(fake_cloud::ARM_HOST, at(fake_cloud::ARM_IP))
        .resolve(fake_cloud::AML_HOST, at(fake_cloud::AML_IP))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The JWT's claims (its signature is the fake's to check).
fn jwt_claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or_default()
}

fn workspace_url() -> String {
    format!(
        "https://{}/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.MachineLearningServices/workspaces/{WORKSPACE}?api-version=2025-12-01",
        fake_cloud::ARM_HOST
    )
}

fn front_door_url() -> String {
    format!(
        "https://{}/mlflow/v2.0/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.MachineLearningServices/workspaces/{WORKSPACE}/api/2.0/mlflow/experiments/get-by-name?experiment_name=probe",
        fake_cloud::AML_HOST
    )
}

impl Probe {
    /// Takes a token; its answer's `expires_in` is the JWT's `exp - iat`, the suite's
    /// lifetime, and ARM and the front door accept it now. So does IMDS's answer agree.
    async fn take(sh: &Shared) -> Self {
        let secret = format!("probe-{}", random_suffix());
        sh.cloud
            .register_app(TENANT, PROBE_CLIENT, Credential::Secret(secret.clone()));
        sh.cloud.register_managed_identity(TENANT, PROBE_CLIENT);
        let http = fakes_client(sh);
        let scope = format!("{}/.default", fake_cloud::ARM_RESOURCE);
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", PROBE_CLIENT),
            ("client_secret", secret.as_str()),
            ("scope", scope.as_str()),
        ];
        let url = format!(
            "https://{}/{TENANT}/oauth2/v2.0/token",
            fake_cloud::ENTRA_HOST
        );
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let answer: Value = http
            .post(url)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = answer["access_token"]
            .as_str()
            .expect("a token")
            .to_string();
        let claims = jwt_claims(&token);
        let lifetime = TOKEN_LIFETIME.as_secs() as i64;
        assert_eq!(
            answer["expires_in"].as_i64(),
            Some(lifetime),
            "Entra ID's expires_in"
        );
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            lifetime
        );
        assert_imds_agrees(&http).await;
        let probe = Self { token, http };
        assert_eq!(
            probe.status(&workspace_url()).await.0,
            200,
            "ARM, fresh token"
        );
        let (status, body, _) = probe.status(&front_door_url()).await;
        assert!(
            status == 200 || status == 404,
            "front door, fresh token: {status} {body}"
        );
        probe
    }

    async fn status(&self, url: &str) -> (u16, Value, String) {
        let r = self
            .http
            .get(url)
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let challenge = r
            .headers()
            .get(http::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        (status, r.json().await.unwrap_or_default(), challenge)
    }

    /// By now (the long runs took minutes) the token has expired: ARM answers 401
    /// `ExpiredAuthenticationToken` and the front door 401 in Azure ML's envelope, both with
    /// an `invalid_token` challenge.
    async fn assert_refused_once_expired(&self, sh: &Shared) {
        let exp = jwt_claims(&self.token)["exp"].as_i64().unwrap();
        assert!(
            jiff::Timestamp::now().as_second() >= exp,
            "the probe token is still valid"
        );
        let (status, body, challenge) = self.status(&workspace_url()).await;
        assert_eq!(status, 401, "ARM, expired token: {body}");
        assert_eq!(
            body["error"]["code"], "ExpiredAuthenticationToken",
            "{body}"
        );
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("The access token expiry UTC time '"),
            "{body}"
        );
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
        let (status, body, challenge) = self.status(&front_door_url()).await;
        assert_eq!(status, 401, "front door, expired token: {body}");
        assert_eq!(
            body["error"]["innerError"]["code"], "AuthorizationError",
            "{body}"
        );
        assert!(
            challenge.contains("The access token has expired."),
            "{challenge}"
        );
        let logged = sh.cloud.calls().into_iter().filter(|c| {
            c.client_id.as_deref() == Some(PROBE_CLIENT)
                && c.error.as_deref() == Some("ExpiredAuthenticationToken")
        });
        assert_eq!(
            logged.count(),
            2,
            "both refusals logged under the probe's client"
        );
    }
}

/// IMDS's `expires_in`, `expires_on` and `not_before` are its JWT's.
async fn assert_imds_agrees(http: &reqwest::Client) {
    let url = format!(
        "http://{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={}&client_id={PROBE_CLIENT}",
        fake_cloud::IMDS_IP,
        fake_cloud::ARM_RESOURCE
    );
    let r = http
        .get(url)
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    let answer: Value = r.json().await.unwrap();
    let claims = jwt_claims(answer["access_token"].as_str().expect("an IMDS token"));
    let text = |k: &str| answer[k].as_str().and_then(|s| s.parse::<i64>().ok());
    assert_eq!(text("expires_on"), claims["exp"].as_i64(), "{answer}");
    assert_eq!(text("not_before"), claims["iat"].as_i64(), "{answer}");
    assert_eq!(
        text("expires_in"),
        Some(TOKEN_LIFETIME.as_secs() as i64),
        "{answer}"
    );
}
