//! Issue 20, item 1: training runs that outlive their access tokens. The suite's fakes issue
//! tokens that live `TOKEN_LIFETIME` (a minute) and ARM and the front door refuse them after
//! that, so a run of five minutes needs its client to fetch new ones as it goes: workload
//! identity (azure-identity's own client, a new token once 30 s have passed, the projected
//! token file re-read every 600 s), service principals and managed identity (MSAL, which treats
//! a token with under five minutes left as expired, so with one-minute tokens it fetches one
//! for each call). What a run shows is `common::token_renewal`'s; the run across a kubelet
//! rotation of the projected token is `tests/azureml_token_rotation.rs`.

use super::*;

use common::token_renewal::{EPOCH_SECONDS, Mode, in_reread_window, long_job, outlived_its_tokens};

/// A metric every 5 s (`EPOCH_SECONDS`) for 60 epochs: five minutes of logging.
const EPOCHS: u64 = 60;

const LONG_SP_SECRET_CLIENT: &str = "4a1d7e0f-6b2c-4d8e-9f0a-1b2c3d4e5f10";
const LONG_SP_CERT_CLIENT: &str = "3f0c6d9e-5a1b-4c7d-8e9f-0a1b2c3d4e11";
const LONG_MI_CLIENT: &str = "2e9b5c8d-4f0a-4b6c-9d8e-9f0a1b2c3d12";
/// The application the test itself takes a token for, to see it refused once expired.
const PROBE_CLIENT: &str = "1d8a4b7c-3e9f-4a5b-8c7d-8e9f0a1b2c13";

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
            workload_identity(sh),
            secret(sh),
            certificate(sh),
            managed(sh),
        );
        let modes = [modes.0, modes.1, modes.2, modes.3];
        for mode in &modes {
            let job = long_job(&mode.ns, EPOCHS, None);
            kubectl(&["apply", "-f", "-"], &job.to_string()).await;
        }
        let deadline = Duration::from_secs(EPOCHS * EPOCH_SECONDS) + 5 * MINUTE;
        let runs = futures::future::join_all(
            modes
                .iter()
                .map(|m| trained_within(&sh.client, &m.ns, "job-name=train", deadline)),
        )
        .await;
        let rest = Rest::local(&sh.server);
        for (mode, run) in modes.iter().zip(&runs) {
            let figures = outlived_its_tokens(&sh.cloud, &rest, mode, run, EPOCHS).await;
            println!("{}: {figures}", mode.name);
        }
        println!(
            "long runs: {:.0} s from the first binding",
            started.elapsed().as_secs_f64()
        );
        probe.assert_refused_once_expired(sh).await;
    });
}

// ---------------------------------------------------------------- the modes

/// The team's application federated with the namespace's `trainer`.
async fn workload_identity(sh: &Shared) -> Mode {
    let (ns, experiment) = team(sh, "long-wi").await;
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
        projected: None,
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

// ---------------------------------------------------------------- the re-read window

/// `in_reread_window`, which the kubelet-rotation run (`tests/azureml_token_rotation.rs`)
/// applies to the fetches of its pod's own 600 s projection.
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
