//! Self-managed webhook certificates: one CA and serving certificate in a Secret shared by all
//! replicas (so they serve the same chain), the MutatingWebhookConfiguration's caBundle kept
//! equal to that CA, and the serving certificate re-issued well before it expires.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};

use super::{CertStore, Pems, generate, issue};

const NOT_AFTER: &str = "mlflow-operator.io/not-after";
/// Conflicting writes in a row before `ensure` gives up until its next round.
const ATTEMPTS: u32 = 5;

#[derive(Clone, Debug)]
pub struct Config {
    pub namespace: String,
    pub secret: String,
    pub webhook_config: String,
    /// DNS names / IPs of the serving certificate.
    pub names: Vec<String>,
    pub ca_days: i64,
    pub leaf_days: i64,
    /// Re-issue when less than this many days of validity remain.
    pub renew_days: i64,
    pub check_every: Duration,
    /// Owner of the Secret (the operator's ServiceAccount), so it goes with the release.
    pub owner: Option<OwnerReference>,
}

impl Config {
    pub fn new(
        namespace: &str,
        secret: &str,
        webhook_config: &str,
        service: &str,
        extra: &[String],
    ) -> Self {
        let mut names = extra.to_vec();
        if names.is_empty() {
            names = vec![
                service.to_string(),
                format!("{service}.{namespace}"),
                format!("{service}.{namespace}.svc"),
                format!("{service}.{namespace}.svc.cluster.local"),
            ];
        }
        Self {
            namespace: namespace.to_string(),
            secret: secret.to_string(),
            webhook_config: webhook_config.to_string(),
            names,
            ca_days: 3650,
            leaf_days: 365,
            renew_days: 120,
            check_every: Duration::from_secs(300),
            owner: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SelfManagedError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Cert(#[from] super::CertError),
    #[error(
        "Secret {0} exists but lacks ca.crt, ca.key, tls.crt or tls.key; delete it to let the operator regenerate it"
    )]
    Incomplete(String),
    #[error(
        "Secret {secret} was changed by another writer {attempts} times while this replica wrote it; will try again"
    )]
    Contended { secret: String, attempts: u32 },
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn to_secret(cfg: &Config, p: &Pems) -> Secret {
    let data: BTreeMap<String, ByteString> = [
        ("ca.crt", &p.ca_cert),
        ("ca.key", &p.ca_key),
        ("tls.crt", &p.cert),
        ("tls.key", &p.key),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
    .collect();
    let mut s = Secret {
        data: Some(data),
        type_: Some("Opaque".into()),
        ..Default::default()
    };
    s.metadata.name = Some(cfg.secret.clone());
    s.metadata.namespace = Some(cfg.namespace.clone());
    s.metadata.annotations = Some([(NOT_AFTER.to_string(), p.not_after.to_string())].into());
    s.metadata.owner_references = cfg.owner.clone().map(|o| vec![o]);
    s.metadata.labels = Some(
        [(
            "app.kubernetes.io/managed-by".to_string(),
            "mlflow-operator".to_string(),
        )]
        .into(),
    );
    s
}

fn from_secret(s: &Secret) -> Option<Pems> {
    let data = s.data.as_ref()?;
    let get = |k: &str| {
        data.get(k)
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
    };
    Some(Pems {
        ca_cert: get("ca.crt")?,
        ca_key: get("ca.key")?,
        cert: get("tls.crt")?,
        key: get("tls.key")?,
        not_after: s
            .metadata
            .annotations
            .as_ref()?
            .get(NOT_AFTER)?
            .parse()
            .ok()?,
    })
}

/// Makes sure the Secret holds a CA and a serving certificate with at least `renew_days` left,
/// creating or re-issuing as needed. Replicas race safely: creation and update are conditional,
/// and the loser reads what the winner wrote.
pub async fn ensure(client: &Client, cfg: &Config) -> Result<Pems, SelfManagedError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &cfg.namespace);
    for _ in 0..ATTEMPTS {
        match secrets.get_opt(&cfg.secret).await? {
            None => {
                let pems = generate(&cfg.names, cfg.ca_days, cfg.leaf_days, now())?;
                match secrets
                    .create(&PostParams::default(), &to_secret(cfg, &pems))
                    .await
                {
                    Ok(_) => {
                        tracing::info!(secret = %cfg.secret, "generated the webhook CA and serving certificate");
                        return Ok(pems);
                    }
                    Err(kube::Error::Api(e)) if e.code == 409 => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            Some(existing) => {
                let pems = from_secret(&existing)
                    .ok_or_else(|| SelfManagedError::Incomplete(cfg.secret.clone()))?;
                if pems.not_after - now() > cfg.renew_days * 86400 {
                    return Ok(pems);
                }
                let renewed = issue(
                    &pems.ca_cert,
                    &pems.ca_key,
                    &cfg.names,
                    cfg.leaf_days,
                    now(),
                )?;
                let mut s = to_secret(cfg, &renewed);
                s.metadata.resource_version = existing.metadata.resource_version.clone();
                match secrets
                    .replace(&cfg.secret, &PostParams::default(), &s)
                    .await
                {
                    Ok(_) => {
                        tracing::info!(secret = %cfg.secret, "rotated the webhook serving certificate");
                        return Ok(renewed);
                    }
                    Err(kube::Error::Api(e)) if e.code == 409 => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Err(SelfManagedError::Contended {
        secret: cfg.secret.clone(),
        attempts: ATTEMPTS,
    })
}

/// What [`sync_ca_bundle`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaBundle {
    /// At least one webhook's caBundle was written.
    Updated,
    /// Every webhook already carried the CA.
    Current,
    /// The configuration does not exist (yet): not an error, the installer may create it later.
    NoConfiguration,
}

/// Sets caBundle on every webhook of the configuration that does not carry `ca_pem` yet.
pub async fn sync_ca_bundle(
    client: &Client,
    name: &str,
    ca_pem: &str,
) -> Result<CaBundle, kube::Error> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let Some(mwc) = api.get_opt(name).await? else {
        tracing::warn!(webhook_config = %name, "MutatingWebhookConfiguration not found; caBundle not set yet");
        return Ok(CaBundle::NoConfiguration);
    };
    let want = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let ops: Vec<serde_json::Value> = mwc
        .webhooks
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter(|(_, w)| w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) != Some(ca_pem.as_bytes()))
        .map(|(i, _)| serde_json::json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": want}))
        .collect();
    if ops.is_empty() {
        return Ok(CaBundle::Current);
    }
    let patch: json_patch::Patch =
        serde_json::from_value(serde_json::Value::Array(ops)).expect("valid patch");
    api.patch(name, &PatchParams::default(), &Patch::<()>::Json(patch))
        .await?;
    tracing::info!(webhook_config = %name, "caBundle updated");
    Ok(CaBundle::Updated)
}

/// Keeps the store serving the Secret's certificate and the caBundle current, forever.
pub async fn run(client: Client, cfg: Config, store: Arc<CertStore>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let wait = match ensure(&client, &cfg).await {
            Ok(pems) => {
                if let Err(e) = store.set_pem(pems.cert.as_bytes(), pems.key.as_bytes()) {
                    tracing::error!(error = %e, "self-managed certificate unusable");
                }
                // Until the configuration exists with our CA, look again soon rather than at the
                // (long) rotation interval: pods are refused while caBundle is missing.
                let soon = cfg.check_every.min(Duration::from_secs(5));
                let next = match sync_ca_bundle(&client, &cfg.webhook_config, &pems.ca_cert).await {
                    Ok(CaBundle::Updated | CaBundle::Current) => cfg.check_every,
                    Ok(CaBundle::NoConfiguration) => soon,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not update caBundle");
                        soon
                    }
                };
                backoff = Duration::from_secs(1);
                next
            }
            Err(e) => {
                tracing::warn!(error = %e, "self-managed certificate not ready; retrying");
                backoff = (backoff * 2).min(Duration::from_secs(60));
                backoff
            }
        };
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use bytes::Bytes;
    use http::{Method, Request, Response};
    use http_body_util::Full;

    /// A client whose API server has no Secret, and refuses every create as a conflict (as if
    /// another replica always won the race); it counts the creates.
    fn always_conflicting() -> (Client, Arc<Mutex<u32>>) {
        let creates = Arc::new(Mutex::new(0));
        let seen = creates.clone();
        let service = tower::service_fn(move |req: Request<kube::client::Body>| {
            let (code, reason) = if req.method() == Method::POST {
                *seen.lock().unwrap() += 1;
                (409, "AlreadyExists")
            } else {
                (404, "NotFound")
            };
            let status = serde_json::json!({"kind": "Status", "apiVersion": "v1",
                "status": "Failure", "reason": reason, "code": code, "message": reason});
            let response = Response::builder()
                .status(code)
                .body(Full::new(Bytes::from(status.to_string())))
                .unwrap();
            async move { Ok::<_, std::convert::Infallible>(response) }
        });
        (Client::new(service, "ns"), creates)
    }

    /// Five lost races used to be reported as a Secret that lacks its keys, with the advice to
    /// delete it.
    #[tokio::test]
    async fn losing_every_race_is_contention_not_an_incomplete_secret() {
        let (client, creates) = always_conflicting();
        let cfg = Config::new("ns", "cert", "mwc", "svc", &[]);
        let err = ensure(&client, &cfg).await.unwrap_err();
        assert!(
            matches!(&err, SelfManagedError::Contended { secret, attempts: 5 } if secret == "cert"),
            "{err}"
        );
        assert!(!err.to_string().contains("lacks"), "{err}");
        assert_eq!(*creates.lock().unwrap(), ATTEMPTS);
    }
}
