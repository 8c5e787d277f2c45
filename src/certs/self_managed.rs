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
use tokio::time::Instant;

use super::probe::Probe;
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
    /// How a new CA's trust is proven before its certificate is served (None: a fixed delay).
    pub probe: Option<Probe>,
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
            probe: None,
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
        // A pair written in by hand has no expiry annotation: re-issued at once from its CA.
        not_after: s
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(NOT_AFTER)?.parse().ok())
            .unwrap_or(0),
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

/// The caBundle a replica needs: these CAs (PEM), and either exactly them or at least them
/// (leaving CAs another replica still needs in place).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Want {
    pub cas: Vec<String>,
    pub exact: bool,
}

impl Want {
    fn pem(&self) -> String {
        self.cas.iter().map(|c| format!("{}\n", c.trim())).collect()
    }

    fn satisfied_by(&self, current: Option<&[u8]>) -> bool {
        let current = String::from_utf8_lossy(current.unwrap_or_default());
        if self.exact {
            current.trim() == self.pem().trim()
        } else {
            self.cas.iter().all(|c| current.contains(c.trim()))
        }
    }
}

/// Sets caBundle to `ca_pem` on every webhook of the configuration that does not carry it yet.
pub async fn sync_ca_bundle(
    client: &Client,
    name: &str,
    ca_pem: &str,
) -> Result<CaBundle, kube::Error> {
    let want = Want {
        cas: vec![ca_pem.to_string()],
        exact: true,
    };
    sync_ca_bundle_to(client, name, &want).await
}

/// Sets caBundle to what `want` asks on every webhook of the configuration that lacks it.
pub async fn sync_ca_bundle_to(
    client: &Client,
    name: &str,
    want: &Want,
) -> Result<CaBundle, kube::Error> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let Some(mwc) = api.get_opt(name).await? else {
        tracing::warn!(webhook_config = %name, "MutatingWebhookConfiguration not found; caBundle not set yet");
        return Ok(CaBundle::NoConfiguration);
    };
    let value = base64::engine::general_purpose::STANDARD.encode(want.pem());
    let ops: Vec<serde_json::Value> = mwc
        .webhooks
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter(|(_, w)| !want.satisfied_by(w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice())))
        .map(|(i, _)| serde_json::json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": value}))
        .collect();
    if ops.is_empty() {
        return Ok(CaBundle::Current);
    }
    let patch: json_patch::Patch =
        serde_json::from_value(serde_json::Value::Array(ops)).expect("valid patch");
    api.patch(name, &PatchParams::default(), &Patch::<()>::Json(patch))
        .await?;
    tracing::info!(webhook_config = %name, cas = want.cas.len(), "caBundle updated");
    Ok(CaBundle::Updated)
}

/// Without a probe: how long the API server may take to use a caBundle it was given (its
/// informer's lag) before a replica serves a certificate only the new CA in it verifies.
const CA_PROPAGATION: Duration = Duration::from_secs(5);

/// The CA this replica serves a certificate of, and the one it served before a CA change, kept
/// in the caBundle until every replica has moved on.
#[derive(Debug, Default)]
pub struct Serving {
    ca: Option<String>,
    previous: Option<(String, Instant)>,
}

impl Serving {
    /// The caBundle needed to serve a certificate of `ca` now.
    pub fn want(&self, ca: &str, now: Instant) -> Want {
        let previous = match (&self.ca, &self.previous) {
            (Some(served), _) if served != ca => Some(served.clone()),
            (_, Some((old, until))) if now < *until => Some(old.clone()),
            _ => None,
        };
        match previous {
            Some(old) => Want {
                cas: vec![ca.to_string(), old],
                exact: false,
            },
            // A replica just through a CA change drops the old CA; any other only makes sure
            // the CA is there (a replica starting mid-change must not drop the old one).
            None => Want {
                cas: vec![ca.to_string()],
                exact: self.previous.is_some(),
            },
        }
    }

    /// Whether serving `ca` is a change of CA (the new one must reach the API server first).
    pub fn changes_ca(&self, ca: &str) -> bool {
        self.ca.as_deref().is_some_and(|served| served != ca)
    }

    /// Now serving `ca`; a previous CA stays wanted for `keep`.
    pub fn serve(&mut self, ca: &str, now: Instant, keep: Duration) {
        match self.ca.replace(ca.to_string()) {
            Some(old) if old != ca => self.previous = Some((old, now + keep)),
            _ if self
                .previous
                .as_ref()
                .is_some_and(|(_, until)| now >= *until) =>
            {
                self.previous = None
            }
            _ => {}
        }
    }
}

/// Serves the Secret's certificate, after its CA is in the caBundle (beside the CA served so
/// far while they differ) and, for a new CA, trusted; returns when to look again.
async fn apply(
    client: &Client,
    cfg: &Config,
    stores: &Stores,
    pems: &Pems,
    serving: &mut Serving,
) -> Duration {
    // Until the configuration exists with our CA, look again soon rather than at the (long)
    // rotation interval: pods are refused while caBundle is missing.
    let soon = cfg.check_every.min(Duration::from_secs(5));
    let name = cfg.names.first().map_or("", String::as_str);
    if let Err(e) = super::verify_chain(pems, name) {
        tracing::error!(secret = %cfg.secret, error = %e, "not serving the Secret's certificate; keeping the current one");
        return soon;
    }
    let want = serving.want(&pems.ca_cert, Instant::now());
    let next = match sync_ca_bundle_to(client, &cfg.webhook_config, &want).await {
        Ok(CaBundle::NoConfiguration) => soon,
        // Also when another replica wrote the caBundle: this one has no evidence of its own yet.
        Ok(CaBundle::Updated | CaBundle::Current) => {
            if serving.changes_ca(&pems.ca_cert) {
                await_new_ca(client, cfg, &stores.probe, pems).await;
            }
            cfg.check_every
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not update caBundle");
            // Serving a new CA's certificate before the API server trusts it fails admissions;
            // the same CA's is safe.
            if serving.changes_ca(&pems.ca_cert) {
                return soon;
            }
            soon
        }
    };
    match stores
        .serving
        .set_pem(pems.cert.as_bytes(), pems.key.as_bytes())
    {
        Ok(true) => {
            tracing::info!(secret = %cfg.secret, "serving the webhook certificate of the Secret")
        }
        Ok(false) => {}
        Err(e) => {
            tracing::error!(error = %e, "self-managed certificate unusable");
            return next;
        }
    }
    // Every replica reads the Secret within check_every of a change, and switches at most one
    // wait later (the probe's bound, or twice the fixed delay): by then none serves the old CA.
    let keep = match cfg.probe {
        Some(ref probe) => cfg.check_every * 2 + probe.bound,
        None => cfg.check_every * 2 + CA_PROPAGATION * 2,
    };
    serving.serve(&pems.ca_cert, Instant::now(), keep);
    next
}

/// Waits until the API server trusts the new CA of `pems`: the probe's evidence, at most
/// the probe's bound; without a probe, a fixed [`CA_PROPAGATION`].
async fn await_new_ca(client: &Client, cfg: &Config, probe_store: &CertStore, pems: &Pems) {
    let Some(probe) = &cfg.probe else {
        tracing::info!(delay = ?CA_PROPAGATION, "a new CA: serving its certificate after a fixed delay (no CA probe configured, --ca-probe-addr)");
        tokio::time::sleep(CA_PROPAGATION).await;
        return;
    };
    if let Err(e) = probe_store.set_pem(pems.cert.as_bytes(), pems.key.as_bytes()) {
        tracing::error!(error = %e, "the probe listener cannot serve the new certificate");
    }
    match probe.await_trust(client, &pems.ca_cert).await {
        Ok(took) => tracing::info!(
            ?took,
            "the API server trusts the new CA (a dry-run through a canary webhook that trusts only it succeeded): serving its certificate"
        ),
        Err(last) => tracing::error!(
            bound = ?probe.bound,
            last_failure = %last,
            port = probe.port,
            "no evidence that the API server trusts the new CA: serving its certificate anyway, and admissions may fail until it does. Check that the API server reaches the webhook's probe port (the Service's ca-probe port, a NetworkPolicy)"
        ),
    }
}

/// Where certificates are served: the webhook's listener, and the CA probe's.
pub struct Stores {
    pub serving: Arc<CertStore>,
    pub probe: Arc<CertStore>,
}

/// Keeps the store serving the Secret's certificate and the caBundle current, forever.
pub async fn run(client: Client, cfg: Config, stores: Stores) {
    let mut backoff = Duration::from_secs(1);
    let mut serving = Serving::default();
    loop {
        let wait = match ensure(&client, &cfg).await {
            Ok(pems) => {
                backoff = Duration::from_secs(1);
                apply(&client, &cfg, &stores, &pems, &mut serving).await
            }
            Err(e) => {
                tracing::warn!(error = %e, "self-managed certificate not ready; retrying");
                // Never later than the next regular check: a failure (the API server
                // restarting, say) must not delay a rotation the Secret already asks for.
                let cap = cfg
                    .check_every
                    .clamp(Duration::from_secs(1), Duration::from_secs(60));
                backoff = (backoff * 2).min(cap);
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

    #[test]
    fn a_new_ca_is_trusted_beside_the_old_one_until_every_replica_moved() {
        let t0 = Instant::now();
        let keep = Duration::from_secs(30);
        let mut s = Serving::default();
        // A replica starting makes sure its CA is there, dropping nothing.
        let w = s.want("A", t0);
        assert_eq!((w.cas.clone(), w.exact), (vec!["A".to_string()], false));
        assert!(!s.changes_ca("A"));
        s.serve("A", t0, keep);
        assert!(s.changes_ca("B"));
        // The Secret now holds CA B: both are wanted before B's certificate is served.
        let w = s.want("B", t0);
        assert_eq!(w.cas, ["B", "A"]);
        assert!(!w.exact);
        s.serve("B", t0, keep);
        assert!(!s.changes_ca("B"));
        assert_eq!(s.want("B", t0 + keep / 2).cas, ["B", "A"], "A still kept");
        // Once every replica has moved on, A is dropped, once.
        let w = s.want("B", t0 + keep);
        assert_eq!((w.cas.clone(), w.exact), (vec!["B".to_string()], true));
        s.serve("B", t0 + keep, keep);
        let w = s.want("B", t0 + keep);
        assert_eq!((w.cas, w.exact), (vec!["B".to_string()], false));
    }

    #[test]
    fn bundles_are_matched_by_their_cas() {
        let exact = Want {
            cas: vec!["CA-B\n".into()],
            exact: true,
        };
        let both = Want {
            cas: vec!["CA-B".into(), "CA-A".into()],
            exact: false,
        };
        assert_eq!(both.pem(), "CA-B\nCA-A\n");
        assert!(exact.satisfied_by(Some(b"CA-B\n")));
        assert!(!exact.satisfied_by(Some(b"CA-B\nCA-A\n")));
        assert!(!exact.satisfied_by(None));
        assert!(both.satisfied_by(Some(b"CA-A\nCA-B\n")));
        assert!(!both.satisfied_by(Some(b"CA-B\n")));
    }

    #[test]
    fn a_pair_written_without_the_expiry_annotation_is_reissued() {
        let pems = super::super::generate(&["svc".into()], 10, 5, 1_800_000_000).unwrap();
        let cfg = Config::new("ns", "cert", "mwc", "svc", &[]);
        let mut secret = to_secret(&cfg, &pems);
        assert_eq!(from_secret(&secret).unwrap().not_after, pems.not_after);
        secret.metadata.annotations = None;
        assert_eq!(from_secret(&secret).unwrap().not_after, 0);
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
