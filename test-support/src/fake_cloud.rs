//! Azure's cloud endpoints, faked in the test process and reached by pods on the real node under
//! their real names (CoreDNS serves `CLUSTER_HOSTS_FILE`; the addresses are on the node):
//!
//! - Entra ID, `https://login.microsoftonline.com`: MSAL's instance discovery and OpenID
//!   configuration, and the token endpoint `POST /{tenant}/oauth2/v2.0/token` for workload
//!   identity (a ServiceAccount token verified against the API server's JWKS: issuer, audience
//!   `api://AzureADTokenExchange`, subject, expiry), service principals with a client secret, and
//!   service principals with a certificate (the client assertion MSAL signs: signature with the
//!   certificate's key, `x5t`/`x5t#S256` of the certificate, audience = the token endpoint,
//!   issuer = subject = the client id, expiry).
//! - IMDS, `http://169.254.169.254/metadata/identity/oauth2/token`: `Metadata: true`,
//!   api-version, resource, and the user-assigned client id.
//! - Azure Resource Manager, `https://management.azure.com`: the workspace GET, bearer checked,
//!   answering `properties.mlFlowTrackingUri` = `azureml://westeurope.api.azureml.ms/...`.
//! - The Azure ML MLflow front door, `https://westeurope.api.azureml.ms`: bearer checked, MLflow
//!   REST forwarded to a real `mlflow server --serve-artifacts` with the run's `artifact_uri`
//!   rewritten to `azureml://`, `batch/metadata` answering SAS upload URLs on this same host,
//!   and the SAS `PUT` (signature checked, no bearer) relayed into the server's artifact store.
//!
//! Every access token is an HS256 JWT of this fake (audience `https://management.azure.com`,
//! issuer `https://sts.windows.net/{tenant}/`), naming the app and how it authenticated, so ARM
//! and the front door log who called. Each service keeps a request log, and every credential
//! that crossed the fakes is kept for the log sweep (`secrets_seen`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::fake_azure::{
    Reply, arm_error, entra_error, hang, scripted_error, verify_service_account_token, ws_key,
};
use crate::fake_tls;

pub const ENTRA_HOST: &str = "login.microsoftonline.com";
pub const ARM_HOST: &str = "management.azure.com";
pub const AML_HOST: &str = "westeurope.api.azureml.ms";
pub const ENTRA_IP: &str = "10.250.0.10";
pub const ARM_IP: &str = "10.250.0.11";
pub const AML_IP: &str = "10.250.0.12";
pub const IMDS_IP: &str = "169.254.169.254";
/// The resource every token here is for, and its `.default` scope.
pub const ARM_RESOURCE: &str = "https://management.azure.com";
pub const ARM_SCOPE: &str = "https://management.azure.com/.default";
pub const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const STORAGE_ACCOUNT: &str = "fakeamlstorage";
const STORAGE_CONTAINER: &str = "azureml";

/// How an application registered in the fake Entra ID proves who it is.
#[derive(Clone, Debug)]
pub enum Credential {
    /// Workload identity: federated credentials for these ServiceAccount token subjects.
    Federated(Vec<String>),
    /// A client secret.
    Secret(String),
    /// A certificate (DER) and its RSA public key (PKCS#1 DER) for client assertions.
    Certificate {
        der: Vec<u8>,
        public_key_der: Vec<u8>,
    },
}

/// One token request the fake Entra ID or IMDS answered.
#[derive(Clone, Debug)]
pub struct Exchange {
    pub service: &'static str,
    pub tenant: String,
    pub client_id: String,
    /// `federated`, `client_secret`, `certificate` or `managed_identity`.
    pub via: String,
    /// For workload identity: the subject of the exchanged ServiceAccount token.
    pub subject: Option<String>,
    pub status: u16,
    pub error: Option<String>,
}

/// One bearer-authenticated call ARM or the front door answered.
#[derive(Clone, Debug)]
pub struct Call {
    pub service: &'static str,
    pub method: String,
    pub path: String,
    pub status: u16,
    /// The caller, from its access token: client id, how it authenticated, and for workload
    /// identity the ServiceAccount subject.
    pub client_id: Option<String>,
    pub via: Option<String>,
    pub subject: Option<String>,
}

#[derive(Default)]
struct Logs {
    lines: Vec<String>,
    exchanges: Vec<Exchange>,
    calls: Vec<Call>,
    secrets: Vec<Seen>,
}

/// A credential that crossed the fakes: an access token they issued, or a client assertion or
/// client secret they were sent. None of them may ever appear in a log outside the fakes.
#[derive(Clone, Debug)]
pub struct Seen {
    /// What it is, e.g. `access token of <client id> via federated`.
    pub what: String,
    pub value: String,
}

struct Inner {
    sa_issuer: String,
    kube: kube::Client,
    signing_key: Vec<u8>,
    sas_key: Vec<u8>,
    mlflow_url: String,
    http: reqwest::Client,
    apps: Mutex<HashMap<String, (String, Credential)>>,
    managed: Mutex<HashMap<String, String>>,
    workspaces: Mutex<HashMap<(String, String, String), String>>,
    /// What ARM answers every workspace GET with, while set.
    arm_reply: Mutex<Option<Reply>>,
    logs: Mutex<Logs>,
}

impl Inner {
    fn seen(&self, what: String, value: &str) {
        let value = value.to_string();
        self.logs.lock().unwrap().secrets.push(Seen { what, value });
    }

    fn line(&self, line: String) {
        eprintln!("fake cloud: {line}");
        self.logs.lock().unwrap().lines.push(line);
    }
}

/// The running fakes; the servers stop when this is dropped.
pub struct FakeCloud {
    inner: Arc<Inner>,
    /// PEM of the CA that issued the servers' certificate (names: the real hosts).
    pub ca_pem: String,
    _servers: fake_tls::Servers,
}

impl FakeCloud {
    /// Starts the four services on their node addresses; the front door forwards to the
    /// `mlflow server --serve-artifacts` at `mlflow_url`.
    pub async fn start(kube: kube::Client, mlflow_url: &str) -> Self {
        let (ca_pem, tls) = fake_tls::tls_config(&[ENTRA_HOST, ARM_HOST, AML_HOST]);
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let key = |what: &str| {
            use sha2::Digest;
            let seed = format!("{what}{}{}", crate::random_suffix(), crate::random_suffix());
            sha2::Sha256::digest(seed.as_bytes()).to_vec()
        };
        let inner = Arc::new(Inner {
            sa_issuer: crate::cluster_env("CLUSTER_SA_ISSUER"),
            kube,
            signing_key: key("tokens"),
            sas_key: key("sas"),
            mlflow_url: mlflow_url.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            apps: Mutex::default(),
            managed: Mutex::default(),
            workspaces: Mutex::default(),
            arm_reply: Mutex::default(),
            logs: Mutex::default(),
        });
        let entra = Router::new()
            .route("/common/discovery/instance", get(instance_discovery))
            .route(
                "/{tenant}/v2.0/.well-known/openid-configuration",
                get(openid_configuration),
            )
            .route("/{tenant}/oauth2/v2.0/token", post(entra_token))
            .fallback(not_found_logged);
        let arm = Router::new()
            .route(
                "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.MachineLearningServices/workspaces/{ws}",
                get(arm_workspace),
            )
            .fallback(not_found_logged);
        let imds = Router::new()
            .route("/metadata/identity/oauth2/token", get(imds_token))
            .fallback(not_found_logged);
        let front_door = Router::new().fallback(front_door);
        let bind = |ip: &str, port: u16| {
            let addr = format!("{ip}:{port}");
            async move {
                TcpListener::bind(&addr).await.unwrap_or_else(|e| {
                    panic!(
                        "bind {addr}: {e} (run inside the cluster's network namespace: \
                         tests/cluster/exec; CLUSTER_TEST_HOST_IPS are on the node)"
                    )
                })
            }
        };
        let tasks = vec![
            tokio::spawn(fake_tls::serve(
                bind(ENTRA_IP, 443).await,
                acceptor.clone(),
                entra.with_state(inner.clone()),
            )),
            tokio::spawn(fake_tls::serve(
                bind(ARM_IP, 443).await,
                acceptor.clone(),
                arm.with_state(inner.clone()),
            )),
            tokio::spawn(fake_tls::serve(
                bind(AML_IP, 443).await,
                acceptor,
                front_door.with_state(inner.clone()),
            )),
            tokio::spawn({
                let l = bind(IMDS_IP, 80).await;
                let r = imds.with_state(inner.clone());
                async move {
                    let _ = axum::serve(l, r).await;
                }
            }),
        ];
        Self {
            inner,
            ca_pem,
            _servers: fake_tls::Servers(tasks),
        }
    }

    /// `IP name` lines for the cluster's hosts file.
    pub fn hosts_lines() -> String {
        format!("{ENTRA_IP} {ENTRA_HOST}\n{ARM_IP} {ARM_HOST}\n{AML_IP} {AML_HOST}\n")
    }

    /// Registers (or extends) an application in `tenant`. Federated subjects accumulate.
    pub fn register_app(&self, tenant: &str, client_id: &str, credential: Credential) {
        let mut apps = self.inner.apps.lock().unwrap();
        match (apps.get_mut(client_id), credential) {
            (Some((_, Credential::Federated(subjects))), Credential::Federated(more)) => {
                subjects.extend(more)
            }
            (_, credential) => {
                apps.insert(client_id.to_string(), (tenant.to_string(), credential));
            }
        }
    }

    /// A user-assigned managed identity IMDS issues tokens for, in `tenant`.
    pub fn register_managed_identity(&self, tenant: &str, client_id: &str) {
        self.inner
            .managed
            .lock()
            .unwrap()
            .insert(client_id.to_string(), tenant.to_string());
    }

    /// Creates an Azure ML workspace; ARM answers its `mlFlowTrackingUri`, which is returned.
    pub fn add_workspace(&self, sub: &str, rg: &str, ws: &str) -> String {
        let uri = format!("azureml://{AML_HOST}/mlflow/v1.0/{}", scope(sub, rg, ws));
        self.inner
            .workspaces
            .lock()
            .unwrap()
            .insert(ws_key(sub, rg, ws), uri.clone());
        uri
    }

    /// Changes the `mlFlowTrackingUri` ARM answers for a workspace.
    pub fn set_workspace_uri(&self, sub: &str, rg: &str, ws: &str, uri: &str) {
        self.inner
            .workspaces
            .lock()
            .unwrap()
            .insert(ws_key(sub, rg, ws), uri.to_string());
    }

    /// Answers every ARM workspace GET (after its bearer and api-version checks) with `reply`;
    /// None: normal answers again.
    pub fn set_arm_reply(&self, reply: Option<Reply>) {
        *self.inner.arm_reply.lock().unwrap() = reply;
    }

    pub fn exchanges(&self) -> Vec<Exchange> {
        self.inner.logs.lock().unwrap().exchanges.clone()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.inner.logs.lock().unwrap().calls.clone()
    }

    /// Every access token issued and every client assertion and client secret received.
    pub fn secrets_seen(&self) -> Vec<Seen> {
        self.inner.logs.lock().unwrap().secrets.clone()
    }

    /// Every request every service saw, in order, one line each.
    pub fn request_log(&self) -> Vec<String> {
        self.inner.logs.lock().unwrap().lines.clone()
    }
}

fn scope(sub: &str, rg: &str, ws: &str) -> String {
    format!(
        "subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.MachineLearningServices/workspaces/{ws}"
    )
}

/// A service principal's certificate: a self-signed RSA certificate and its key, as the PEM
/// azure-identity reads (`AZURE_CLIENT_CERTIFICATE_PATH`: certificate and key in one file), and
/// the credential the fake Entra ID checks assertions with.
pub fn service_principal_certificate(client_id: &str) -> (String, Credential) {
    use rcgen::{CertificateParams, DnType, KeyPair};
    let key = KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("an RSA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("sp-{client_id}"));
    let cert = params.self_signed(&key).unwrap();
    let pem = format!("{}{}", cert.pem(), key.serialize_pem());
    (
        pem,
        Credential::Certificate {
            der: cert.der().to_vec(),
            public_key_der: key.public_key_raw().to_vec(),
        },
    )
}

async fn not_found_logged(State(s): State<Arc<Inner>>, method: Method, uri: Uri) -> Response {
    s.line(format!("{method} {uri} 404 (not faked)"));
    (
        StatusCode::NOT_FOUND,
        format!("{} is not faked", uri.path()),
    )
        .into_response()
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

// ---------------------------------------------------------------- Entra ID

fn token_endpoint(tenant: &str) -> String {
    format!("https://{ENTRA_HOST}/{tenant}/oauth2/v2.0/token")
}

async fn instance_discovery(
    State(s): State<Arc<Inner>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    // The tenant is in the authorization endpoint MSAL names.
    let tenant = q
        .get("authorization_endpoint")
        .and_then(|a| a.split('/').nth(3).map(str::to_string))
        .unwrap_or_else(|| "common".into());
    s.line(format!(
        "GET {ENTRA_HOST}/common/discovery/instance (tenant {tenant}) 200"
    ));
    axum::Json(json!({
        "tenant_discovery_endpoint": format!("https://{ENTRA_HOST}/{tenant}/v2.0/.well-known/openid-configuration"),
        "api-version": "1.1",
        "metadata": [{
            "preferred_network": ENTRA_HOST,
            "preferred_cache": "login.windows.net",
            "aliases": [ENTRA_HOST, "login.windows.net", "login.microsoft.com", "sts.windows.net"],
        }],
    }))
    .into_response()
}

async fn openid_configuration(State(s): State<Arc<Inner>>, Path(tenant): Path<String>) -> Response {
    s.line(format!(
        "GET {ENTRA_HOST}/{tenant}/v2.0/.well-known/openid-configuration 200"
    ));
    let base = format!("https://{ENTRA_HOST}/{tenant}");
    axum::Json(json!({
        "token_endpoint": token_endpoint(&tenant),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("https://{ENTRA_HOST}/{tenant}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": format!("{base}/v2.0"),
        "request_uri_parameter_supported": false,
        "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
        "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{base}/oauth2/v2.0/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{base}/oauth2/v2.0/logout"),
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "tid"],
        "kerberos_endpoint": format!("{base}/kerberos"),
        "tenant_region_scope": "EU",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    }))
    .into_response()
}

fn access_token(
    s: &Inner,
    tenant: &str,
    client_id: &str,
    via: &str,
    subject: Option<&str>,
) -> String {
    let now = now();
    let claims = json!({
        "iss": format!("https://sts.windows.net/{tenant}/"),
        "aud": ARM_RESOURCE,
        "iat": now, "nbf": now, "exp": now + 3600,
        "appid": client_id,
        "tid": tenant,
        "sub": subject.unwrap_or(client_id),
        "idtyp": "app",
        "fake_via": via,
    });
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&s.signing_key),
    )
    .unwrap()
}

async fn entra_token(
    State(s): State<Arc<Inner>>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let client_id = form.get("client_id").cloned().unwrap_or_default();
    let mut exchange = Exchange {
        service: "entra",
        tenant: tenant.clone(),
        client_id: client_id.clone(),
        via: String::new(),
        subject: None,
        status: 200,
        error: None,
    };
    for key in ["client_assertion", "client_secret"] {
        if let Some(v) = form.get(key) {
            s.seen(format!("{key} of {client_id}"), v);
        }
    }
    let outcome = check_token_request(&s, &tenant, &form, &mut exchange).await;
    let response = match outcome {
        Ok(()) => {
            let token = access_token(
                &s,
                &tenant,
                &client_id,
                &exchange.via,
                exchange.subject.as_deref(),
            );
            s.seen(
                format!("access token of {client_id} via {}", exchange.via),
                &token,
            );
            axum::Json(json!({
                "token_type": "Bearer",
                "expires_in": 3599,
                "ext_expires_in": 3599,
                "access_token": token,
            }))
            .into_response()
        }
        Err((status, error, description)) => {
            exchange.status = status.as_u16();
            exchange.error = Some(description.clone());
            entra_error(status, error, &description)
        }
    };
    s.line(format!(
        "POST {ENTRA_HOST}/{tenant}/oauth2/v2.0/token {} client_id={client_id} via={}{}{}",
        exchange.status,
        exchange.via,
        exchange
            .subject
            .as_deref()
            .map(|x| format!(" subject={x}"))
            .unwrap_or_default(),
        exchange
            .error
            .as_deref()
            .map(|e| format!(" error={e}"))
            .unwrap_or_default(),
    ));
    s.logs.lock().unwrap().exchanges.push(exchange);
    response
}

type Refusal = (StatusCode, &'static str, String);

async fn check_token_request(
    s: &Inner,
    tenant: &str,
    form: &HashMap<String, String>,
    exchange: &mut Exchange,
) -> Result<(), Refusal> {
    let bad = StatusCode::BAD_REQUEST;
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return Err((
            bad,
            "unsupported_grant_type",
            "AADSTS70003: The app requested an unsupported grant type.".into(),
        ));
    }
    let client_id = form.get("client_id").cloned().unwrap_or_default();
    let app = s.apps.lock().unwrap().get(&client_id).cloned();
    let Some((app_tenant, credential)) = app.filter(|(t, _)| t == tenant) else {
        return Err((
            bad,
            "unauthorized_client",
            format!(
                "AADSTS700016: Application with identifier '{client_id}' was not found in the directory '{tenant}'."
            ),
        ));
    };
    let scope = form.get("scope").cloned().unwrap_or_default();
    if scope != ARM_SCOPE {
        return Err((
            bad,
            "invalid_scope",
            format!(
                "AADSTS500011: The resource principal named {scope} was not found in the tenant named {app_tenant}."
            ),
        ));
    }
    let assertion = form.get("client_assertion");
    if assertion.is_some()
        && form.get("client_assertion_type").map(String::as_str) != Some(JWT_BEARER)
    {
        return Err((
            bad,
            "invalid_request",
            "AADSTS50027: client_assertion_type must be jwt-bearer.".into(),
        ));
    }
    check_credential(s, form, tenant, &client_id, credential, exchange).await
}

/// The app's proof, checked against its registered credential.
async fn check_credential(
    s: &Inner,
    form: &HashMap<String, String>,
    tenant: &str,
    client_id: &str,
    credential: Credential,
    exchange: &mut Exchange,
) -> Result<(), Refusal> {
    let unauthorized = StatusCode::UNAUTHORIZED;
    let assertion = form.get("client_assertion");
    match credential {
        Credential::Federated(subjects) => {
            exchange.via = "federated".into();
            let Some(assertion) = assertion else {
                return Err((unauthorized, "invalid_client", "AADSTS7000218: The request body must contain the following parameter: 'client_assertion'.".into()));
            };
            let claims = verify_federated(s, assertion).await.map_err(|e| {
                (
                    unauthorized,
                    "invalid_client",
                    format!("AADSTS700211: The client assertion could not be validated: {e}."),
                )
            })?;
            let sub = claims["sub"].as_str().unwrap_or_default().to_string();
            exchange.subject = Some(sub.clone());
            if !subjects.contains(&sub) {
                return Err((
                    unauthorized,
                    "invalid_client",
                    format!(
                        "AADSTS70021: No matching federated identity record found for presented assertion. Assertion Issuer: '{}'. Assertion Subject: '{sub}'. Assertion Audience: '{TOKEN_EXCHANGE_AUDIENCE}'.",
                        claims["iss"].as_str().unwrap_or_default()
                    ),
                ));
            }
            Ok(())
        }
        Credential::Secret(secret) => {
            exchange.via = "client_secret".into();
            if form.get("client_secret") == Some(&secret) {
                Ok(())
            } else {
                Err((
                    unauthorized,
                    "invalid_client",
                    format!(
                        "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
                    ),
                ))
            }
        }
        Credential::Certificate {
            der,
            public_key_der,
        } => {
            exchange.via = "certificate".into();
            let Some(assertion) = assertion else {
                return Err((unauthorized, "invalid_client", "AADSTS7000218: The request body must contain the following parameter: 'client_assertion'.".into()));
            };
            verify_certificate_assertion(assertion, &der, &public_key_der, tenant, client_id)
                .map_err(|e| {
                    (
                        unauthorized,
                        "invalid_client",
                        format!("AADSTS700027: Client assertion failed signature validation: {e}."),
                    )
                })
        }
    }
}

/// A ServiceAccount token checked against the API server's JWKS.
async fn verify_federated(s: &Inner, token: &str) -> Result<Value, String> {
    verify_service_account_token(&s.kube, &s.sa_issuer, token).await
}

/// The assertion MSAL signs with the certificate's key: RS256 with `x5t` (SHA-1 thumbprint) or
/// PS256 with `x5t#S256`; audience the token endpoint; issuer and subject the client id.
fn verify_certificate_assertion(
    token: &str,
    der: &[u8],
    public_key_der: &[u8],
    tenant: &str,
    client_id: &str,
) -> Result<(), String> {
    use sha2::Digest;
    let header = jsonwebtoken::decode_header(token).map_err(|e| format!("not a JWT: {e}"))?;
    let raw_header: Value = {
        let part = token.split('.').next().unwrap_or_default();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|e| e.to_string())?;
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())?
    };
    let sha1 = b64url(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, der).as_ref(),
    );
    let sha256 = b64url(&sha2::Sha256::digest(der));
    // MSAL encodes thumbprints base64url with padding; compare without it.
    let unpadded = |k: &str| {
        raw_header[k]
            .as_str()
            .map(|t| t.trim_end_matches('=').to_string())
    };
    let thumbprint_ok = match header.alg {
        Algorithm::RS256 => unpadded("x5t") == Some(sha1),
        Algorithm::PS256 => unpadded("x5t#S256") == Some(sha256),
        other => return Err(format!("algorithm {other:?} is not accepted")),
    };
    if !thumbprint_ok {
        return Err(format!(
            "the assertion's thumbprint (x5t {}, x5t#S256 {}) is not the registered certificate's",
            raw_header["x5t"], raw_header["x5t#S256"]
        ));
    }
    let key = DecodingKey::from_rsa_der(public_key_der);
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[token_endpoint(tenant)]);
    validation.set_issuer(&[client_id]);
    validation.sub = Some(client_id.to_string());
    validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    validation.leeway = 0;
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

// ---------------------------------------------------------------- IMDS

/// Why IMDS refuses the request, as (status, error, description, the log's note); None when it
/// answers with a token.
fn imds_refusal(
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    client_id: &str,
    assigned: bool,
) -> Option<(StatusCode, &'static str, String, String)> {
    let bad = StatusCode::BAD_REQUEST;
    let resource = q
        .get("resource")
        .map(|r| r.trim_end_matches('/').to_string());
    if headers.get("metadata").and_then(|v| v.to_str().ok()) != Some("true") {
        let why = "Required metadata header not specified";
        Some((bad, "invalid_request", why.into(), why.into()))
    } else if !q.contains_key("api-version") {
        let why = "Required query variable 'api-version' is missing";
        Some((
            bad,
            "invalid_request",
            why.into(),
            "api-version missing".into(),
        ))
    } else if resource.as_deref() != Some(ARM_RESOURCE) {
        let why = format!("AADSTS500011: The resource principal named {resource:?} was not found.");
        Some((
            bad,
            "invalid_resource",
            why,
            format!("resource {resource:?}"),
        ))
    } else if !assigned {
        let why = format!("Identity not found: client_id '{client_id}' is not assigned to this VM");
        Some((
            bad,
            "invalid_request",
            why,
            format!("no identity {client_id:?} assigned"),
        ))
    } else {
        None
    }
}

async fn imds_token(
    State(s): State<Arc<Inner>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let client_id = q.get("client_id").cloned().unwrap_or_default();
    let mut exchange = Exchange {
        service: "imds",
        tenant: String::new(),
        client_id: client_id.clone(),
        via: "managed_identity".into(),
        subject: None,
        status: 200,
        error: None,
    };
    let refuse = |status: StatusCode, error: &str, description: String| {
        (
            status,
            axum::Json(json!({"error": error, "error_description": description})),
        )
            .into_response()
    };
    let tenant = s.managed.lock().unwrap().get(&client_id).cloned();
    let response = match imds_refusal(&q, &headers, &client_id, tenant.is_some()) {
        Some((status, error, description, logged)) => {
            exchange.status = status.as_u16();
            exchange.error = Some(logged);
            refuse(status, error, description)
        }
        None => {
            let tenant = tenant.unwrap_or_default();
            exchange.tenant = tenant.clone();
            let exp = now() + 3600;
            let token = access_token(&s, &tenant, &client_id, "managed_identity", None);
            s.seen(format!("access token of {client_id} via IMDS"), &token);
            axum::Json(json!({
                "access_token": token,
                "client_id": client_id,
                "expires_in": "3599",
                "expires_on": exp.to_string(),
                "ext_expires_in": "3599",
                "not_before": now().to_string(),
                "resource": ARM_RESOURCE,
                "token_type": "Bearer",
            }))
            .into_response()
        }
    };
    s.line(format!(
        "GET {IMDS_IP}/metadata/identity/oauth2/token {} client_id={client_id}{}",
        exchange.status,
        exchange
            .error
            .as_deref()
            .map(|e| format!(" error={e}"))
            .unwrap_or_default()
    ));
    s.logs.lock().unwrap().exchanges.push(exchange);
    response
}

// ---------------------------------------------------------------- bearer tokens

/// The caller's token claims, or why it is refused.
fn verify_bearer(s: &Inner, headers: &HeaderMap) -> Result<Value, String> {
    let auth = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or("the Authorization header is missing")?;
    let token = auth
        .strip_prefix("Bearer ")
        .ok_or("the Authorization header is not a bearer token")?;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&[ARM_RESOURCE]);
    validation.leeway = 0;
    let claims = jsonwebtoken::decode::<Value>(
        token,
        &DecodingKey::from_secret(&s.signing_key),
        &validation,
    )
    .map_err(|e| format!("the access token is invalid: {e}"))?
    .claims;
    let tid = claims["tid"].as_str().unwrap_or_default();
    if claims["iss"] != format!("https://sts.windows.net/{tid}/") {
        return Err("the access token's issuer is not its tenant's".into());
    }
    Ok(claims)
}

fn record_call(
    s: &Inner,
    service: &'static str,
    method: &Method,
    path: &str,
    status: u16,
    claims: Option<&Value>,
) {
    let get = |k: &str| claims.and_then(|c| c[k].as_str()).map(str::to_string);
    let call = Call {
        service,
        method: method.to_string(),
        path: path.to_string(),
        status,
        client_id: get("appid"),
        via: get("fake_via"),
        subject: get("sub"),
    };
    s.line(format!(
        "{method} {}{path} {status} caller={} via={} subject={}",
        if service == "arm" { ARM_HOST } else { AML_HOST },
        call.client_id.as_deref().unwrap_or("-"),
        call.via.as_deref().unwrap_or("-"),
        call.subject.as_deref().unwrap_or("-"),
    ));
    s.logs.lock().unwrap().calls.push(call);
}

// ---------------------------------------------------------------- ARM

async fn arm_workspace(
    State(s): State<Arc<Inner>>,
    Path((sub, rg, ws)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let path = uri.path().to_string();
    let claims = match verify_bearer(&s, &headers) {
        Ok(c) => c,
        Err(e) => {
            record_call(&s, "arm", &Method::GET, &path, 401, None);
            return arm_error(StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken", e);
        }
    };
    let api_version = query.get("api-version").map(String::as_str);
    if !api_version.is_some_and(|v| crate::fake_azure::API_VERSIONS.contains(&v)) {
        record_call(&s, "arm", &Method::GET, &path, 400, Some(&claims));
        return arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidApiVersionParameter",
            format!("The api-version '{api_version:?}' is invalid."),
        );
    }
    let reply = s.arm_reply.lock().unwrap().clone();
    if let Some(reply) = reply {
        let client_id = claims["appid"].as_str().unwrap_or_default().to_string();
        if let Some(r) = scripted_error(&reply, &client_id, &scope(&sub, &rg, &ws)) {
            record_call(
                &s,
                "arm",
                &Method::GET,
                &path,
                r.status().as_u16(),
                Some(&claims),
            );
            return r;
        }
        if let Reply::Hang = reply {
            // Status 0: taken, never answered.
            record_call(&s, "arm", &Method::GET, &path, 0, Some(&claims));
            return hang().await;
        }
    }
    let found = s
        .workspaces
        .lock()
        .unwrap()
        .get(&ws_key(&sub, &rg, &ws))
        .cloned();
    let Some(tracking_uri) = found else {
        record_call(&s, "arm", &Method::GET, &path, 404, Some(&claims));
        return arm_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!(
                "The Resource 'Microsoft.MachineLearningServices/workspaces/{ws}' under resource group '{rg}' was not found."
            ),
        );
    };
    record_call(&s, "arm", &Method::GET, &path, 200, Some(&claims));
    axum::Json(json!({
        "id": format!("/{}", scope(&sub, &rg, &ws)),
        "name": ws,
        "type": "Microsoft.MachineLearningServices/workspaces",
        "location": "westeurope",
        "kind": "Default",
        "properties": {
            "provisioningState": "Succeeded",
            "discoveryUrl": format!("https://{AML_HOST}/discovery"),
            "mlFlowTrackingUri": tracking_uri,
        },
    }))
    .into_response()
}

// ---------------------------------------------------------------- Azure ML front door

/// `(scope, rest)` of `/{prefix}/subscriptions/.../workspaces/{ws}{rest}`.
fn split_scope<'a>(path: &'a str, prefix: &str) -> Option<(&'a str, &'a str)> {
    let after = path.strip_prefix(prefix)?;
    let parts: Vec<&str> = after.splitn(9, '/').collect();
    // subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.MachineLearningServices/workspaces/{ws}/rest
    if parts.len() < 8
        || parts[0] != "subscriptions"
        || !parts[2].eq_ignore_ascii_case("resourceGroups")
        || parts[4] != "providers"
        || parts[6] != "workspaces"
    {
        return None;
    }
    let scope_len: usize = parts[..8].iter().map(|p| p.len() + 1).sum::<usize>() - 1;
    let rest = &after[scope_len..];
    Some((&after[..scope_len], rest))
}

fn sas_signature(s: &Inner, path: &str, expiry: &str) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(&s.sas_key);
    h.update(path.as_bytes());
    h.update(b"\n");
    h.update(expiry.as_bytes());
    b64url(&h.finalize())
}

async fn front_door(
    State(s): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let storage_prefix = format!("/{STORAGE_ACCOUNT}/{STORAGE_CONTAINER}/");
    if path.starts_with(&storage_prefix) {
        return sas_put(&s, &method, &uri, &headers, body).await;
    }
    let claims = match verify_bearer(&s, &headers) {
        Ok(c) => c,
        Err(e) => {
            record_call(&s, "aml", &method, &path, 401, None);
            return (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({"error": {"code": "UserError", "message": e}})),
            )
                .into_response();
        }
    };
    let response = if let Some((scope, rest)) = split_scope(&path, "/mlflow/v2.0/") {
        forward_mlflow(&s, &method, scope, rest, uri.query(), &headers, body).await
    } else if let Some((scope, rest)) = split_scope(&path, "/history/v1.0/") {
        batch_metadata(&s, &method, scope, rest, body).await
    } else {
        (StatusCode::NOT_FOUND, format!("{path} is not faked")).into_response()
    };
    record_call(
        &s,
        "aml",
        &method,
        &path,
        response.status().as_u16(),
        Some(&claims),
    );
    response
}

async fn forward_mlflow(
    s: &Inner,
    method: &Method,
    scope: &str,
    rest: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let url = match query {
        Some(q) => format!("{}{rest}?{q}", s.mlflow_url),
        None => format!("{}{rest}", s.mlflow_url),
    };
    let mut req = s.http.request(method.clone(), &url).body(body);
    if let Some(ct) = headers.get(http::header::CONTENT_TYPE) {
        req = req.header(http::header::CONTENT_TYPE, ct);
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = resp.status();
    let content_type = resp.headers().get(http::header::CONTENT_TYPE).cloned();
    let bytes = resp.bytes().await.unwrap_or_default();
    let body = match serde_json::from_slice::<Value>(&bytes) {
        Ok(mut v) => {
            rewrite_artifact_uris(&mut v, scope);
            serde_json::to_vec(&v).unwrap()
        }
        Err(_) => bytes.to_vec(),
    };
    let mut out = (status, body).into_response();
    if let Some(ct) = content_type {
        out.headers_mut().insert(http::header::CONTENT_TYPE, ct);
    }
    out
}

/// `mlflow-artifacts:/<exp>/<run>/artifacts` -> `azureml://<host>/mlflow/v2.0/<scope>/experiments/<exp>/runs/<run>/artifacts`.
fn rewrite_artifact_uris(v: &mut Value, scope: &str) {
    match v {
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if k == "artifact_uri"
                    && let Some(uri) = val.as_str()
                    && let Some(tail) = uri.strip_prefix("mlflow-artifacts:/")
                {
                    let parts: Vec<&str> = tail.trim_start_matches('/').split('/').collect();
                    if parts.len() >= 3 && parts[2] == "artifacts" {
                        *val = Value::String(format!(
                            "azureml://{AML_HOST}/mlflow/v2.0/{scope}/experiments/{}/runs/{}/artifacts",
                            parts[0], parts[1]
                        ));
                    }
                } else {
                    rewrite_artifact_uris(val, scope);
                }
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|i| rewrite_artifact_uris(i, scope)),
        _ => {}
    }
}

/// `POST .../experiments/{exp}/runs/{run}/artifacts/batch/metadata`: an empty artifact per path
/// and a SAS URL on this host to upload it to.
async fn batch_metadata(
    s: &Inner,
    method: &Method,
    _scope: &str,
    rest: &str,
    body: Bytes,
) -> Response {
    let parts: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    let ok_shape = method == Method::POST
        && parts.len() == 7
        && (parts[0] == "experiments" || parts[0] == "experimentids")
        && parts[2] == "runs"
        && parts[4..] == ["artifacts", "batch", "metadata"];
    if !ok_shape {
        return (StatusCode::NOT_FOUND, format!("{rest} is not faked")).into_response();
    }
    let (exp, run) = (parts[1], parts[3]);
    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
    let expiry = (now() + 3600).to_string();
    let mut infos = serde_json::Map::new();
    let mut artifacts = serde_json::Map::new();
    for p in request["paths"].as_array().into_iter().flatten() {
        let Some(path) = p["path"].as_str() else {
            continue;
        };
        let blob_path =
            format!("/{STORAGE_ACCOUNT}/{STORAGE_CONTAINER}/{exp}/{run}/artifacts/{path}");
        let sig = sas_signature(s, &blob_path, &expiry);
        let uri = format!(
            "https://{AML_HOST}{blob_path}?sv=2021-08-06&sr=b&sp=rcw&se={expiry}&sig={sig}"
        );
        let container = format!("dcid.{run}");
        artifacts.insert(
            path.into(),
            json!({
                "artifactId": format!("ExperimentRun/{container}/{path}"),
                "origin": "ExperimentRun", "container": container, "path": path,
            }),
        );
        infos.insert(
            path.into(),
            json!({
                "contentUri": uri, "origin": "ExperimentRun", "container": container, "path": path,
            }),
        );
    }
    axum::Json(json!({
        "artifacts": artifacts,
        "artifactContentInformation": infos,
        "errors": {},
    }))
    .into_response()
}

/// The SAS upload: signature and expiry checked, no bearer expected; the blob goes into the
/// mlflow server's artifact store at the run's artifact path.
async fn sas_put(
    s: &Inner,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let path = percent_decode(uri.path());
    let q: HashMap<String, String> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let expiry = q.get("se").cloned().unwrap_or_default();
    let sig_ok = q
        .get("sig")
        .is_some_and(|sig| *sig == sas_signature(s, &path, &expiry));
    let unexpired = expiry.parse::<i64>().is_ok_and(|e| e > now());
    let (status, message) = if method != Method::PUT {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "only PUT is faked".to_string(),
        )
    } else if headers.contains_key(http::header::AUTHORIZATION) {
        (
            StatusCode::BAD_REQUEST,
            "a SAS upload carries no Authorization header".into(),
        )
    } else if !sig_ok || !unexpired {
        (
            StatusCode::FORBIDDEN,
            "AuthenticationFailed: Signature did not match or expired".into(),
        )
    } else {
        let artifact = path
            .strip_prefix(&format!("/{STORAGE_ACCOUNT}/{STORAGE_CONTAINER}/"))
            .unwrap_or_default();
        let url = format!(
            "{}/api/2.0/mlflow-artifacts/artifacts/{artifact}",
            s.mlflow_url
        );
        match s.http.put(&url).body(body).send().await {
            Ok(r) if r.status().is_success() => (
                StatusCode::CREATED,
                format!("-> mlflow-artifacts/{artifact}"),
            ),
            Ok(r) => (
                StatusCode::BAD_GATEWAY,
                format!("artifact store answered {}", r.status()),
            ),
            Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()),
        }
    };
    s.line(format!(
        "{method} {AML_HOST}{path}?...&sig=... {} (SAS{}) {message}",
        status.as_u16(),
        if sig_ok { " ok" } else { " bad" }
    ));
    let body = if status == StatusCode::CREATED {
        String::new()
    } else {
        message
    };
    let mut resp = (status, body).into_response();
    if status == StatusCode::CREATED {
        let h = resp.headers_mut();
        h.insert("etag", "\"0x8DC0FAKE0000001\"".parse().unwrap());
        h.insert(
            "last-modified",
            "Thu, 26 Nov 2026 12:00:00 GMT".parse().unwrap(),
        );
        h.insert("x-ms-request-server-encrypted", "true".parse().unwrap());
        h.insert("x-ms-version", "2021-08-06".parse().unwrap());
    }
    resp
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

// ---------------------------------------------------------------- names and trust in the cluster

fn hosts_file() -> String {
    crate::cluster_env("CLUSTER_HOSTS_FILE")
}

/// Removes the real host names' mapping to the fakes from the hosts file CoreDNS serves.
pub fn unmap_hosts() {
    let path = hosts_file();
    let kept: String = std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.contains("# fake-cloud"))
        .map(|l| format!("{l}\n"))
        .collect();
    let _ = std::fs::write(&path, kept);
}

/// Maps the real host names to the fakes in the hosts file CoreDNS serves to pods, and waits
/// until CoreDNS answers them.
pub async fn map_hosts() {
    unmap_hosts();
    let path = hosts_file();
    let mut text = std::fs::read_to_string(&path).unwrap_or_default();
    for line in FakeCloud::hosts_lines().lines() {
        text.push_str(&format!("{line} # fake-cloud\n"));
    }
    std::fs::write(&path, text).unwrap();
    for (name, ip) in [
        (ENTRA_HOST, ENTRA_IP),
        (ARM_HOST, ARM_IP),
        (AML_HOST, AML_IP),
    ] {
        crate::eventually_ok(
            &format!("CoreDNS to answer {name} with {ip}"),
            std::time::Duration::from_secs(60),
            || resolve(name),
        )
        .await
        .iter()
        .find(|a| *a == ip)
        .unwrap_or_else(|| panic!("CoreDNS answers {name} but not with {ip}"));
    }
}

/// The A records CoreDNS (on the node address) answers for `name`.
async fn resolve(name: &str) -> Result<Vec<String>, String> {
    let sock = tokio::net::UdpSocket::bind("0.0.0.0:0")
        .await
        .map_err(|e| e.to_string())?;
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    sock.send_to(&q, "10.250.0.1:53")
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(std::time::Duration::from_secs(1), sock.recv(&mut buf))
        .await
        .map_err(|_| "no DNS answer within 1 s".to_string())?
        .map_err(|e| e.to_string())?;
    let r = &buf[..n];
    let rcode = r[3] & 0x0f;
    if rcode != 0 {
        return Err(format!("rcode {rcode}"));
    }
    let answers = u16::from_be_bytes([r[6], r[7]]);
    let mut i = q.len();
    let mut out = Vec::new();
    for _ in 0..answers {
        // Name: a pointer or labels.
        if r[i] & 0xc0 == 0xc0 {
            i += 2;
        } else {
            while r[i] != 0 {
                i += r[i] as usize + 1;
            }
            i += 1;
        }
        let rtype = u16::from_be_bytes([r[i], r[i + 1]]);
        let len = u16::from_be_bytes([r[i + 8], r[i + 9]]) as usize;
        i += 10;
        if rtype == 1 && len == 4 {
            out.push(format!("{}.{}.{}.{}", r[i], r[i + 1], r[i + 2], r[i + 3]));
        }
        i += len;
    }
    if out.is_empty() {
        return Err("no A record".into());
    }
    Ok(out)
}

/// A ConfigMap `name` in `ns` holding the fakes' CA (`ca.crt`), for pods and the operator to
/// trust.
pub async fn ca_configmap(client: &kube::Client, ns: &str, name: &str, pem: &str) {
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client.clone(), ns);
    let cm: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": name},
        "data": {"ca.crt": pem},
    }))
    .unwrap();
    cms.create(&Default::default(), &cm)
        .await
        .expect("create the CA ConfigMap");
}
