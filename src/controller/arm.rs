//! The one Azure Resource Manager call the controller makes, with the operator's own credential
//! ([`super::credential`]).
//!
//! The MLflow tracking URI of an Azure Machine Learning workspace is the read-only ARM property
//! `properties.mlFlowTrackingUri`. It is read, never built from the region (private-link
//! workspaces use other hosts). Every failure is classified into a [`ResolveError`] whose
//! [`reason`](ResolveError::reason) becomes the binding's condition reason and a metric label.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, Transport};

use super::credential::{self, AzureEnv, CredentialKind, ENV_HINT, ImdsProbe};
use crate::binding::{AzureCloud, AzureMlWorkspace};
use crate::metrics::{Metrics, StatusLabels};

/// The stable `Microsoft.MachineLearningServices` api-version used for the workspace GET.
pub const API_VERSION: &str = "2025-09-01";

/// Retries of transient ARM failures inside one resolve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, the first included.
    pub attempts: u32,
    /// Delay before the first retry; doubled for every further one.
    pub base_delay: Duration,
    /// Upper bound of any delay, Retry-After included.
    pub max_delay: Duration,
    /// Timeout of one HTTP request (token or ARM).
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// Delay before retry number `retry` (0 for the first retry): capped exponential backoff, or
    /// the server's Retry-After when it gave one (also capped).
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let backoff = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(retry.min(16)));
        retry_after.unwrap_or(backoff).min(self.max_delay)
    }
}

/// How the operator reaches Azure.
#[derive(Clone, Debug, Default)]
pub struct AzureConfig {
    /// Overrides the ARM endpoint of every cloud.
    pub arm_endpoint: Option<String>,
    /// Overrides the Entra ID authority host of every cloud.
    pub authority_host: Option<String>,
    /// Extra trusted root CA (PEM) for every Azure call.
    pub ca_pem: Option<Vec<u8>>,
    /// The operator's own credential settings.
    pub env: AzureEnv,
    pub retry: RetryPolicy,
    /// Asked before IMDS's managed identity is, until it has answered once.
    pub imds_probe: ImdsProbe,
}

impl AzureConfig {
    /// The ARM endpoint for `cloud`, without a trailing slash.
    pub fn arm_endpoint(&self, cloud: AzureCloud) -> String {
        self.arm_endpoint
            .as_deref()
            .unwrap_or(cloud.arm_endpoint())
            .trim_end_matches('/')
            .to_string()
    }

    /// The Entra ID authority host for `cloud`.
    pub fn authority_host(&self, cloud: AzureCloud) -> String {
        self.authority_host
            .clone()
            .unwrap_or_else(|| cloud.authority_host().to_string())
    }
}

/// One workspace as ARM addresses it; also the resolver cache key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WorkspaceKey {
    pub arm_endpoint: String,
    pub cloud: AzureCloud,
    pub subscription_id: String,
    pub resource_group: String,
    pub workspace_name: String,
}

impl WorkspaceKey {
    pub fn new(cfg: &AzureConfig, ws: &AzureMlWorkspace) -> Self {
        Self {
            arm_endpoint: cfg.arm_endpoint(ws.cloud),
            cloud: ws.cloud,
            subscription_id: ws.subscription_id.clone(),
            resource_group: ws.resource_group.clone(),
            workspace_name: ws.workspace_name.clone(),
        }
    }

    fn describe(&self) -> String {
        format!(
            "subscription {}, resource group {}, workspace {} ({})",
            self.subscription_id,
            self.resource_group,
            self.workspace_name,
            self.cloud.as_str()
        )
    }

    /// The workspace URL, api-version included.
    pub fn url(&self) -> Result<url::Url, ResolveError> {
        let mut url = url::Url::parse(&self.arm_endpoint).map_err(|e| {
            ResolveError::ArmUnavailable(format!(
                "the ARM endpoint {} is not a URL: {e}",
                self.arm_endpoint
            ))
        })?;
        url.path_segments_mut()
            .map_err(|_| {
                ResolveError::ArmUnavailable(format!(
                    "the ARM endpoint {} cannot have a path",
                    self.arm_endpoint
                ))
            })?
            .pop_if_empty()
            .extend([
                "subscriptions",
                &self.subscription_id,
                "resourceGroups",
                &self.resource_group,
                "providers",
                "Microsoft.MachineLearningServices",
                "workspaces",
                &self.workspace_name,
            ]);
        url.query_pairs_mut()
            .append_pair("api-version", API_VERSION);
        Ok(url)
    }
}

/// Why a tracking URI could not be resolved. `reason()` is the condition reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("{0}")]
    CredentialUnavailable(String),
    #[error("{0}")]
    AuthenticationFailed(String),
    /// Entra ID (or IMDS) did not answer, or answered 408/429/5xx: try again later.
    #[error("{0}")]
    AuthorityUnavailable(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    WorkspaceNotFound(String),
    #[error("{0}")]
    NoTrackingUri(String),
    #[error("{0}")]
    ArmUnavailable(String),
}

impl ResolveError {
    /// The condition reason and metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            ResolveError::CredentialUnavailable(_) => "CredentialUnavailable",
            ResolveError::AuthenticationFailed(_) => "AuthenticationFailed",
            ResolveError::AuthorityUnavailable(_) => "AuthorityUnavailable",
            ResolveError::Unauthorized(_) => "Unauthorized",
            ResolveError::Forbidden(_) => "Forbidden",
            ResolveError::WorkspaceNotFound(_) => "WorkspaceNotFound",
            ResolveError::NoTrackingUri(_) => "NoTrackingUri",
            ResolveError::ArmUnavailable(_) => "ArmUnavailable",
        }
    }

    /// ARM or Entra ID (or the way to them) failed, not the workspace or the operator's access
    /// to it: a later refresh may succeed, and a last good URI is still good meanwhile.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ResolveError::ArmUnavailable(_) | ResolveError::AuthorityUnavailable(_)
        )
    }
}

/// Whether an HTTP status from ARM or Entra ID means the service was overloaded or failing
/// (408, 429, 5xx): the same request may succeed later, so it is retried and a last good URI
/// is kept meanwhile.
pub fn transient_status(code: u16) -> bool {
    matches!(code, 408 | 429 | 500..=599)
}

/// Whether a token error says the authority was unreachable or overloaded (no answer, 408,
/// 429, 5xx) rather than that it refused the credential. azure_identity wraps the HTTP error of
/// the token endpoint in a `Credential` error, so the wrapped one is looked at too.
pub fn authority_unavailable(e: &azure_core::Error) -> bool {
    use azure_core::error::ErrorKind;
    let inner = e.downcast_ref::<azure_core::Error>();
    [Some(e), inner]
        .into_iter()
        .flatten()
        .any(|e| match e.kind() {
            ErrorKind::Connection | ErrorKind::Io => true,
            ErrorKind::HttpResponse { status, .. } => transient_status(u16::from(*status)),
            _ => false,
        })
}

/// What one ARM response means.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Uri(String),
    /// Transient: try again after the server's Retry-After, if it sent one.
    Retry {
        after: Option<Duration>,
        error: ResolveError,
    },
    Fail(ResolveError),
}

/// ARM's error body: `{"error": {"code": ..., "message": ...}}`.
fn arm_error_text(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let code = v["error"]["code"].as_str().unwrap_or_default();
    let message = v["error"]["message"].as_str().unwrap_or_default();
    match (code.is_empty(), message.is_empty()) {
        (false, false) => format!("{code}: {message}"),
        (true, false) => message.to_string(),
        (false, true) => code.to_string(),
        (true, true) => {
            let body = body.trim();
            if body.is_empty() {
                "no error body".to_string()
            } else {
                body.chars().take(300).collect()
            }
        }
    }
}

/// Classifies one ARM response.
pub fn classify(
    key: &WorkspaceKey,
    status: u16,
    retry_after: Option<Duration>,
    body: &str,
) -> Outcome {
    let ws = key.describe();
    match status {
        200 => {
            let v: serde_json::Value = match serde_json::from_str(body) {
                Ok(v) => v,
                Err(e) => {
                    return Outcome::Fail(ResolveError::ArmUnavailable(format!(
                        "Azure Resource Manager answered {ws} with a body that is not JSON: {e}"
                    )));
                }
            };
            match v["properties"]["mlFlowTrackingUri"].as_str() {
                Some(uri) if !uri.trim().is_empty() => Outcome::Uri(uri.trim().to_string()),
                _ => Outcome::Fail(ResolveError::NoTrackingUri(format!(
                    "Azure Resource Manager returned {ws} without properties.mlFlowTrackingUri; \
                     the workspace may still be provisioning or be of a kind without MLflow \
                     tracking (for example a hub); use a project or default workspace, or set \
                     spec.trackingUri"
                ))),
            }
        }
        401 => Outcome::Fail(ResolveError::Unauthorized(format!(
            "Azure Resource Manager refused the operator's token for {ws} (401): {}; check \
             the operator's tenant and that its token is for the cloud's ARM endpoint",
            arm_error_text(body)
        ))),
        403 => Outcome::Fail(ResolveError::Forbidden(format!(
            "the operator's Azure identity may not read {ws} (403): {}; grant it \
             Microsoft.MachineLearningServices/workspaces/read, for example the Reader role \
             on the workspace",
            arm_error_text(body)
        ))),
        404 => Outcome::Fail(ResolveError::WorkspaceNotFound(format!(
            "Azure Resource Manager found no workspace for {ws} (404): {}; check \
             spec.azureML.subscriptionId, resourceGroup, workspaceName and cloud",
            arm_error_text(body)
        ))),
        _ if transient_status(status) => Outcome::Retry {
            after: retry_after,
            error: ResolveError::ArmUnavailable(format!(
                "Azure Resource Manager answered {status} for {ws}: {}",
                arm_error_text(body)
            )),
        },
        _ => Outcome::Fail(ResolveError::ArmUnavailable(format!(
            "Azure Resource Manager answered {status} for {ws}: {}",
            arm_error_text(body)
        ))),
    }
}

/// Parses Retry-After: delta seconds, or an HTTP date (relative to `now`).
pub fn parse_retry_after(value: &str, now: jiff::Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    let secs = when.as_second() - now.as_second();
    Some(Duration::from_secs(secs.max(0) as u64))
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("x-ms-retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        return Some(Duration::from_millis(ms));
    }
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, jiff::Timestamp::now()))
}

/// Resolves tracking URIs from ARM with the operator's own credential.
pub struct ArmClient {
    cfg: AzureConfig,
    http: reqwest::Client,
    metrics: Metrics,
    credentials: Mutex<HashMap<String, Arc<dyn TokenCredential>>>,
    /// IMDS answered a probe once: it is there, no need to ask again.
    imds_answered: AtomicBool,
}

impl ArmClient {
    /// Fails only when the extra CA cannot be used; a missing Azure identity shows up per binding.
    pub fn new(cfg: AzureConfig, metrics: Metrics) -> anyhow::Result<Self> {
        crate::install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(cfg.retry.request_timeout)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = &cfg.ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| anyhow::anyhow!("the Azure CA file holds no PEM certificate: {e}"))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build()?;
        Ok(Self {
            cfg,
            http,
            metrics,
            credentials: Mutex::default(),
            imds_answered: AtomicBool::new(false),
        })
    }

    /// The credential for the authority host of `cloud`, built on first use.
    fn credential(&self, cloud: AzureCloud) -> Result<Arc<dyn TokenCredential>, ResolveError> {
        let authority = self.cfg.authority_host(cloud);
        let mut creds = self.credentials.lock().expect("credential map lock");
        if let Some(c) = creds.get(&authority) {
            return Ok(c.clone());
        }
        let mut custom = CustomConfiguration::default();
        custom.authority_host = authority.clone();
        let client_options = ClientOptions {
            transport: Some(Transport::new(Arc::new(self.http.clone()))),
            cloud: Some(Arc::new(CloudConfiguration::Custom(custom))),
            ..Default::default()
        };
        let cred = credential::build(&self.cfg.env, client_options)?;
        creds.insert(authority, cred.clone());
        Ok(cred)
    }

    /// Fails at once when the operator's credential is IMDS's managed identity and nothing
    /// answers there.
    async fn imds_is_there(&self) -> Result<(), ResolveError> {
        if !self.cfg.env.uses_imds() || self.imds_answered.load(Ordering::Relaxed) {
            return Ok(());
        }
        let why = match self.cfg.imds_probe.answers(&self.http).await {
            Ok(()) => {
                self.imds_answered.store(true, Ordering::Relaxed);
                return Ok(());
            }
            Err(why) => why,
        };
        Err(match self.cfg.env.is_empty() {
            true => ResolveError::CredentialUnavailable(format!(
                "the operator has no Azure credential: no Azure environment variables are set \
                 and {why}; {ENV_HINT}"
            )),
            false => ResolveError::AuthorityUnavailable(format!(
                "the operator's managed identity (AZURE_CLIENT_ID) is unavailable: {why}"
            )),
        })
    }

    async fn token(&self, cloud: AzureCloud, arm: &str) -> Result<String, ResolveError> {
        self.imds_is_there().await?;
        let cred = self.credential(cloud)?;
        let scope = format!("{arm}/.default");
        let kind = self.cfg.env.credential_kind();
        // The identity pipeline retries on its own; bound the whole exchange.
        let limit = self.cfg.retry.request_timeout * self.cfg.retry.attempts.max(1);
        let res = tokio::time::timeout(limit, cred.get_token(&[scope.as_str()], None)).await;
        let (err, unavailable) = match res {
            Ok(Ok(token)) => return Ok(token.token.secret().to_string()),
            Ok(Err(e)) => (e.to_string(), authority_unavailable(&e)),
            Err(_) => (format!("no answer within {limit:?}"), true),
        };
        if kind == CredentialKind::ManagedIdentity && self.cfg.env.is_empty() {
            return Err(ResolveError::CredentialUnavailable(format!(
                "the operator has no Azure credential: no Azure environment variables are set \
                 and managed identity failed ({err}); {ENV_HINT}"
            )));
        }
        let message = format!(
            "the operator's {} credential could not get a token for {scope} from {}: {err}",
            kind.as_str(),
            self.cfg.authority_host(cloud)
        );
        Err(if unavailable {
            ResolveError::AuthorityUnavailable(message)
        } else {
            ResolveError::AuthenticationFailed(message)
        })
    }

    /// Reads `properties.mlFlowTrackingUri` of one workspace, retrying transient failures.
    pub async fn tracking_uri(&self, key: &WorkspaceKey) -> Result<String, ResolveError> {
        let url = key.url()?;
        let retry = &self.cfg.retry;
        let mut attempt = 0;
        loop {
            let token = self.token(key.cloud, &key.arm_endpoint).await?;
            let outcome = self.attempt(key, &url, &token).await;
            attempt += 1;
            match outcome {
                Outcome::Uri(uri) => return Ok(uri),
                Outcome::Fail(e) => return Err(e),
                Outcome::Retry { after, error } => {
                    if attempt >= retry.attempts.max(1) {
                        return Err(match error {
                            ResolveError::ArmUnavailable(m) => ResolveError::ArmUnavailable(
                                format!("{m} (gave up after {attempt} attempts; will try again)"),
                            ),
                            other => other,
                        });
                    }
                    let delay = retry.delay(attempt - 1, after);
                    tracing::debug!(workspace = %key.workspace_name, ?delay, %error, "retrying ARM");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn attempt(&self, key: &WorkspaceKey, url: &url::Url, token: &str) -> Outcome {
        let started = Instant::now();
        let res = self
            .http
            .get(url.clone())
            .bearer_auth(token)
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(self.cfg.retry.request_timeout)
            .send()
            .await;
        let unavailable = |message: String| {
            self.observe("error", started);
            Outcome::Retry {
                after: None,
                error: ResolveError::ArmUnavailable(message),
            }
        };
        let resp = match res {
            Ok(r) => r,
            Err(e) => {
                return unavailable(format!(
                    "Azure Resource Manager at {} did not answer for {}: {}",
                    key.arm_endpoint,
                    key.describe(),
                    error_chain(&e)
                ));
            }
        };
        let status = resp.status().as_u16();
        let after = retry_after(resp.headers());
        let body = match resp.text().await {
            Ok(b) => b,
            Err(e) => {
                return unavailable(format!(
                    "reading Azure Resource Manager's answer for {} failed: {}",
                    key.describe(),
                    error_chain(&e)
                ));
            }
        };
        self.observe(&status.to_string(), started);
        classify(key, status, after, &body)
    }

    fn observe(&self, status: &str, started: Instant) {
        self.metrics
            .arm_request_duration
            .get_or_create(&StatusLabels {
                status: status.to_string(),
            })
            .observe(started.elapsed().as_secs_f64());
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> WorkspaceKey {
        WorkspaceKey {
            arm_endpoint: "https://management.azure.com".into(),
            cloud: AzureCloud::AzurePublicCloud,
            subscription_id: "00000000-0000-0000-0000-000000000001".into(),
            resource_group: "ml-rg".into(),
            workspace_name: "ml-ws".into(),
        }
    }

    #[test]
    fn url_has_the_arm_shape() {
        assert_eq!(
            key().url().unwrap().as_str(),
            "https://management.azure.com/subscriptions/00000000-0000-0000-0000-000000000001/\
             resourceGroups/ml-rg/providers/Microsoft.MachineLearningServices/workspaces/ml-ws\
             ?api-version=2025-09-01"
        );
        let mut k = key();
        k.arm_endpoint = "https://127.0.0.1:4443/".into();
        assert!(
            k.url()
                .unwrap()
                .as_str()
                .starts_with("https://127.0.0.1:4443/subscriptions/")
        );
    }

    #[test]
    fn arm_endpoint_override_applies_to_every_cloud() {
        let mut cfg = AzureConfig::default();
        assert_eq!(
            cfg.arm_endpoint(AzureCloud::AzureChinaCloud),
            "https://management.chinacloudapi.cn"
        );
        cfg.arm_endpoint = Some("https://arm.example/".into());
        for c in [
            AzureCloud::AzurePublicCloud,
            AzureCloud::AzureChinaCloud,
            AzureCloud::AzureUSGovernment,
        ] {
            assert_eq!(cfg.arm_endpoint(c), "https://arm.example");
        }
    }

    #[test]
    fn classification() {
        let k = key();
        assert_eq!(
            classify(
                &k,
                200,
                None,
                r#"{"properties":{"mlFlowTrackingUri":"azureml://x/y"}}"#
            ),
            Outcome::Uri("azureml://x/y".into())
        );
        let reason = |status, body: &str| match classify(&k, status, None, body) {
            Outcome::Fail(e) => (e.reason(), false, e.to_string()),
            Outcome::Retry { error, .. } => (error.reason(), true, error.to_string()),
            Outcome::Uri(u) => panic!("unexpected {u}"),
        };
        assert_eq!(reason(200, r#"{"properties":{}}"#).0, "NoTrackingUri");
        assert_eq!(reason(200, "not json").0, "ArmUnavailable");
        assert_eq!(reason(401, "").0, "Unauthorized");
        let (r, retry, msg) = reason(
            403,
            r#"{"error":{"code":"AuthorizationFailed","message":"no access"}}"#,
        );
        assert_eq!((r, retry), ("Forbidden", false));
        assert!(msg.contains("Microsoft.MachineLearningServices/workspaces/read"));
        assert!(msg.contains("Reader"));
        assert!(msg.contains("AuthorizationFailed: no access"));
        let (r, _, msg) = reason(404, r#"{"error":{"code":"ResourceNotFound"}}"#);
        assert_eq!(r, "WorkspaceNotFound");
        assert!(msg.contains("ml-rg") && msg.contains("ml-ws") && msg.contains("00000000"));
        assert!(reason(429, "").1);
        assert!(reason(500, "").1);
        assert!(reason(503, "").1);
        assert!(!reason(400, "").1);
        assert_eq!(reason(400, "").0, "ArmUnavailable");
    }

    #[test]
    fn transient_statuses() {
        for (code, transient) in [
            (200, false),
            (400, false),
            (401, false),
            (403, false),
            (404, false),
            (407, false),
            (408, true),
            (409, false),
            (429, true),
            (499, false),
            (500, true),
            (502, true),
            (503, true),
            (599, true),
            (600, false),
        ] {
            assert_eq!(transient_status(code), transient, "{code}");
        }
    }

    #[test]
    fn retry_after_parsing() {
        let now = jiff::Timestamp::from_second(784_111_777).unwrap(); // 06 Nov 1994 08:49:37
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    #[test]
    fn backoff_is_exponential_and_capped() {
        let p = RetryPolicy {
            attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
        };
        assert_eq!(p.delay(0, None), Duration::from_millis(500));
        assert_eq!(p.delay(1, None), Duration::from_secs(1));
        assert_eq!(p.delay(2, None), Duration::from_secs(2));
        assert_eq!(p.delay(10, None), Duration::from_secs(10));
        assert_eq!(p.delay(40, None), Duration::from_secs(10));
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(120))),
            Duration::from_secs(10)
        );
    }

    #[tokio::test]
    async fn no_identity_is_credential_unavailable_not_a_crash() {
        // A tenant that is not a GUID-ish value makes the credential fail to build; no I/O.
        let cfg = AzureConfig {
            env: AzureEnv {
                client_id: Some("c".into()),
                tenant_id: Some("bad tenant/".into()),
                federated_token_file: Some("/nonexistent".into()),
                client_secret: None,
                ..Default::default()
            },
            ..Default::default()
        };
        let client = ArmClient::new(cfg, Metrics::new()).unwrap();
        let err = client
            .tracking_uri(&key())
            .await
            .expect_err("must not resolve");
        assert_eq!(err.reason(), "CredentialUnavailable");
        assert!(err.to_string().contains("AZURE_FEDERATED_TOKEN_FILE"));
    }

    /// An Entra ID outage must not read as a refused credential: the binding would lose its
    /// last good URI and every labelled pod would be refused.
    #[test]
    fn token_errors_that_mean_the_authority_is_unavailable() {
        use azure_core::error::{Error, ErrorKind};
        use azure_core::http::StatusCode;
        let http = |code: u16| ErrorKind::HttpResponse {
            status: StatusCode::from(code),
            error_code: None,
            raw_response: None,
        };
        // As azure_identity reports the token endpoint's answer: wrapped in a Credential error.
        let wrapped = |kind: ErrorKind| {
            Error::with_error(
                ErrorKind::Credential,
                kind.into_error(),
                "authentication failed",
            )
        };
        for (error, unavailable) in [
            (wrapped(http(500)), true),
            (wrapped(http(503)), true),
            (wrapped(http(429)), true),
            (wrapped(http(408)), true),
            (wrapped(ErrorKind::Connection), true),
            (ErrorKind::Io.into_error(), true),
            (wrapped(http(400)), false),
            (wrapped(http(401)), false),
            (wrapped(http(403)), false),
            (ErrorKind::Credential.into_error(), false),
            (ErrorKind::DataConversion.into_error(), false),
        ] {
            assert_eq!(authority_unavailable(&error), unavailable, "{error:?}");
        }
        assert!(ResolveError::AuthorityUnavailable(String::new()).is_transient());
        assert!(!ResolveError::AuthenticationFailed(String::new()).is_transient());
    }
}
