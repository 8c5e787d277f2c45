//! Honest fakes of the two Azure endpoints the controller calls, as HTTPS servers on 127.0.0.1:
//!
//! - Entra ID's token endpoint `POST /{tenant}/oauth2/v2.0/token`: verifies a workload-identity
//!   client assertion against the real API server's JWKS (issuer, audience, subject, expiry), or a
//!   client secret, and issues a signed access token for the ARM resource.
//! - Azure Resource Manager's workspace GET: verifies the bearer token and the api-version, and
//!   serves `properties.mlFlowTrackingUri` from a mutable map, or scripted failures.
//!
//! Both share one test CA; start the operator with it as its extra trusted root.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};

use crate::fake_tls;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";
pub const API_VERSIONS: &[&str] = &["2024-10-01", "2025-06-01", "2025-09-01", "2025-12-01"];

/// A scripted ARM answer for one call.
#[derive(Clone, Debug)]
pub enum Reply {
    /// 429 with Retry-After seconds.
    Throttled { retry_after_secs: u64 },
    /// 500 InternalServerError.
    ServerError,
    /// 403 AuthorizationFailed.
    Forbidden,
    /// 404 ResourceNotFound.
    NotFound,
    /// Wait, then answer normally.
    Delay(Duration),
    /// Take the request and never answer it (within the 10 minutes a test may run).
    Hang,
}

/// How the fake Entra ID knows the operator's identity.
#[derive(Clone, Debug)]
pub struct Identity {
    pub tenant_id: String,
    pub client_id: String,
    /// Accept this client secret.
    pub client_secret: Option<String>,
    /// Accept client assertions with this subject (a federated identity credential).
    pub federated_subject: Option<String>,
}

struct Inner {
    identity: Identity,
    sa_issuer: String,
    kube: kube::Client,
    signing_key: Vec<u8>,
    arm_url: String,
    workspaces: Mutex<HashMap<(String, String, String), String>>,
    scripts: Mutex<HashMap<String, VecDeque<Reply>>>,
    always: Mutex<HashMap<String, Reply>>,
    arm_calls: Mutex<HashMap<String, usize>>,
    tokens_issued: Mutex<usize>,
    token_errors: Mutex<Vec<String>>,
    /// Entra ID answers every token request 503 (an outage).
    entra_down: std::sync::atomic::AtomicBool,
}

pub struct FakeAzure {
    inner: Arc<Inner>,
    /// The fake Entra ID authority host (`https://127.0.0.1:<port>`).
    pub authority_url: String,
    /// The fake ARM endpoint (`https://127.0.0.1:<port>`).
    pub arm_url: String,
    /// PEM of the CA that issued both servers' certificates.
    pub ca_pem: String,
    _servers: fake_tls::Servers,
}

impl FakeAzure {
    /// Starts both servers. `kube` reads the API server's JWKS to verify assertions.
    pub async fn start(kube: kube::Client, identity: Identity) -> Self {
        let (ca_pem, tls) = fake_tls::tls_config(&["127.0.0.1", "localhost"]);
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let entra_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let arm_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority_url = format!("https://127.0.0.1:{}", port(&entra_listener));
        let arm_url = format!("https://127.0.0.1:{}", port(&arm_listener));
        let signing_key = {
            use sha2::Digest;
            let seed = format!(
                "{}{}{}",
                crate::random_suffix(),
                arm_url,
                crate::random_suffix()
            );
            sha2::Sha256::digest(seed.as_bytes()).to_vec()
        };
        let inner = Arc::new(Inner {
            identity,
            sa_issuer: crate::cluster_env("CLUSTER_SA_ISSUER"),
            kube,
            signing_key,
            arm_url: arm_url.clone(),
            workspaces: Mutex::default(),
            scripts: Mutex::default(),
            always: Mutex::default(),
            arm_calls: Mutex::default(),
            tokens_issued: Mutex::default(),
            token_errors: Mutex::default(),
            entra_down: Default::default(),
        });
        let entra = Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(token))
            .with_state(inner.clone());
        let arm = Router::new()
            .route(
                "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.MachineLearningServices/workspaces/{ws}",
                get(workspace),
            )
            .fallback(arm_fallback)
            .with_state(inner.clone());
        let tasks = vec![
            tokio::spawn(fake_tls::serve(entra_listener, acceptor.clone(), entra)),
            tokio::spawn(fake_tls::serve(arm_listener, acceptor, arm)),
        ];
        Self {
            inner,
            authority_url,
            arm_url,
            ca_pem,
            _servers: fake_tls::Servers(tasks),
        }
    }

    /// Creates or changes a workspace and its tracking URI.
    pub fn set_workspace(&self, sub: &str, rg: &str, ws: &str, tracking_uri: &str) {
        self.inner
            .workspaces
            .lock()
            .unwrap()
            .insert(ws_key(sub, rg, ws), tracking_uri.to_string());
    }

    /// Answers the next calls for workspace `ws` with `replies`, in order.
    pub fn script(&self, ws: &str, replies: impl IntoIterator<Item = Reply>) {
        self.inner
            .scripts
            .lock()
            .unwrap()
            .entry(ws.to_lowercase())
            .or_default()
            .extend(replies);
    }

    /// Answers every call for `ws` with `reply` (None: normal answers again).
    pub fn always(&self, ws: &str, reply: Option<Reply>) {
        let mut always = self.inner.always.lock().unwrap();
        match reply {
            Some(r) => always.insert(ws.to_lowercase(), r),
            None => always.remove(&ws.to_lowercase()),
        };
    }

    /// ARM calls that reached workspace `ws`.
    pub fn arm_calls(&self, ws: &str) -> usize {
        *self
            .inner
            .arm_calls
            .lock()
            .unwrap()
            .get(&ws.to_lowercase())
            .unwrap_or(&0)
    }

    /// Entra ID answers 503 to every token request while `down`.
    pub fn entra_down(&self, down: bool) {
        use std::sync::atomic::Ordering;
        self.inner.entra_down.store(down, Ordering::SeqCst);
    }

    pub fn tokens_issued(&self) -> usize {
        *self.inner.tokens_issued.lock().unwrap()
    }

    /// Why token requests were refused, for assertion messages.
    pub fn token_errors(&self) -> Vec<String> {
        self.inner.token_errors.lock().unwrap().clone()
    }
}

/// Workspaces are matched case-insensitively, as ARM does (also used by `fake_cloud`).
pub fn ws_key(sub: &str, rg: &str, ws: &str) -> (String, String, String) {
    (sub.to_lowercase(), rg.to_lowercase(), ws.to_lowercase())
}

fn port(l: &TcpListener) -> u16 {
    l.local_addr().unwrap().port()
}

/// An Entra ID error answer, AADSTS code included (also used by `fake_cloud`).
pub fn entra_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "error": error,
            "error_description": description,
            "error_codes": [description
                .strip_prefix("AADSTS")
                .and_then(|s| s.split(':').next())
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0)],
            "timestamp": jiff::Timestamp::now().to_string(),
        })),
    )
        .into_response()
}

async fn token(
    State(s): State<Arc<Inner>>,
    Path(tenant): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if s.entra_down.load(std::sync::atomic::Ordering::SeqCst) {
        return entra_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "AADSTS90033: A transient error has occurred. Please try again.",
        );
    }
    let res = check_token_request(&s, &tenant, &form).await;
    match res {
        Ok(()) => {
            *s.tokens_issued.lock().unwrap() += 1;
            let now = jiff::Timestamp::now().as_second();
            let claims = json!({
                "iss": format!("https://sts.windows.net/{tenant}/"),
                "aud": s.arm_url,
                "iat": now, "nbf": now, "exp": now + 3600,
                "appid": s.identity.client_id,
                "tid": tenant,
            });
            let access_token = jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(&s.signing_key),
            )
            .unwrap();
            axum::Json(json!({
                "token_type": "Bearer",
                "expires_in": 3599,
                "ext_expires_in": 3599,
                "access_token": access_token,
            }))
            .into_response()
        }
        Err(resp) => *resp,
    }
}

async fn check_token_request(
    s: &Inner,
    tenant: &str,
    form: &HashMap<String, String>,
) -> Result<(), Box<Response>> {
    let fail = |status, error: &str, description: String| {
        s.token_errors.lock().unwrap().push(description.clone());
        Err(Box::new(entra_error(status, error, &description)))
    };
    if tenant != s.identity.tenant_id {
        return fail(
            StatusCode::BAD_REQUEST,
            "invalid_tenant",
            format!("AADSTS90002: Tenant '{tenant}' not found."),
        );
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return fail(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "AADSTS70003: The app requested an unsupported grant type.".into(),
        );
    }
    let client_id = form.get("client_id").cloned().unwrap_or_default();
    if client_id != s.identity.client_id {
        return fail(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            format!(
                "AADSTS700016: Application with identifier '{client_id}' was not found in the directory '{tenant}'."
            ),
        );
    }
    let want_scope = format!("{}/.default", s.arm_url);
    let scope = form.get("scope").cloned().unwrap_or_default();
    if scope != want_scope {
        return fail(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            format!(
                "AADSTS500011: The resource principal named {scope} was not found in the tenant named {tenant}."
            ),
        );
    }
    check_credential(s, form, &client_id)
        .await
        .or_else(|(status, error, description)| fail(status, error, description))
}

/// The client's proof: a federated assertion for the identity's subject, or its secret.
async fn check_credential(
    s: &Inner,
    form: &HashMap<String, String>,
    client_id: &str,
) -> Result<(), (StatusCode, &'static str, String)> {
    let fail = |status, error, description: String| Err((status, error, description));
    if let Some(assertion) = form.get("client_assertion") {
        if form.get("client_assertion_type").map(String::as_str)
            != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        {
            return fail(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "AADSTS50027: client_assertion_type must be jwt-bearer.".into(),
            );
        }
        let Some(subject) = s.identity.federated_subject.as_deref() else {
            return fail(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "AADSTS70021: No matching federated identity record found for presented assertion."
                    .into(),
            );
        };
        match verify_assertion(s, assertion).await {
            Ok(claims) if claims["sub"] == subject => Ok(()),
            Ok(claims) => fail(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                format!(
                    "AADSTS70021: No matching federated identity record found for presented assertion. Assertion Issuer: '{}'. Assertion Subject: '{}'. Assertion Audience: '{TOKEN_EXCHANGE_AUDIENCE}'.",
                    claims["iss"].as_str().unwrap_or_default(),
                    claims["sub"].as_str().unwrap_or_default()
                ),
            ),
            Err(e) => fail(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                format!("AADSTS700211: The client assertion could not be validated: {e}."),
            ),
        }
    } else if let Some(secret) = form.get("client_secret") {
        if s.identity.client_secret.as_deref() == Some(secret.as_str()) {
            Ok(())
        } else {
            fail(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                format!(
                    "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
                ),
            )
        }
    } else {
        fail(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "AADSTS7000218: The request body must contain the following parameter: 'client_assertion' or 'client_secret'.".into(),
        )
    }
}

/// Verifies a ServiceAccount token against the API server's JWKS.
async fn verify_assertion(s: &Inner, token: &str) -> Result<Value, String> {
    verify_service_account_token(&s.kube, &s.sa_issuer, token).await
}

/// A projected ServiceAccount token checked as Entra ID checks a federated assertion: signed by
/// one of the API server's keys (its JWKS), issuer, audience `api://AzureADTokenExchange`,
/// expiry; returns its claims (also used by `fake_cloud`).
pub async fn verify_service_account_token(
    kube: &kube::Client,
    issuer: &str,
    token: &str,
) -> Result<Value, String> {
    let jwks_raw = kube
        .request_text(
            http::Request::get("/openid/v1/jwks")
                .body(Vec::new())
                .unwrap(),
        )
        .await
        .map_err(|e| format!("reading the issuer's keys: {e}"))?;
    let jwks: jsonwebtoken::jwk::JwkSet =
        serde_json::from_str(&jwks_raw).map_err(|e| format!("issuer keys: {e}"))?;
    let header = jsonwebtoken::decode_header(token).map_err(|e| format!("not a JWT: {e}"))?;
    let kid = header.kid.as_deref().ok_or("the assertion has no kid")?;
    let jwk = jwks
        .find(kid)
        .ok_or_else(|| format!("key {kid} is not one of the issuer's keys"))?;
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[TOKEN_EXCHANGE_AUDIENCE]);
    validation.set_issuer(&[issuer]);
    validation.leeway = 0;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map(|d| d.claims)
        .map_err(|e| e.to_string())
}

/// An ARM error answer (also used by `fake_cloud`).
pub fn arm_error(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

async fn arm_fallback(uri: axum::http::Uri) -> Response {
    arm_error(
        StatusCode::NOT_FOUND,
        "InvalidResourceType",
        format!(
            "The resource path '{}' is not known to this fake ARM.",
            uri.path()
        ),
    )
}

fn verify_bearer(s: &Inner, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let Some(auth) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(Box::new(arm_error(
            StatusCode::UNAUTHORIZED,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.".into(),
        )));
    };
    let Some(token) = auth.strip_prefix("Bearer ") else {
        return Err(Box::new(arm_error(
            StatusCode::UNAUTHORIZED,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is not a bearer token.".into(),
        )));
    };
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&[s.arm_url.as_str()]);
    validation.set_issuer(&[format!("https://sts.windows.net/{}/", s.identity.tenant_id)]);
    jsonwebtoken::decode::<Value>(
        token,
        &DecodingKey::from_secret(&s.signing_key),
        &validation,
    )
    .map(|_| ())
    .map_err(|e| {
        Box::new(arm_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            format!("The access token is invalid: {e}."),
        ))
    })
}

async fn workspace(
    State(s): State<Arc<Inner>>,
    Path((sub, rg, ws)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = verify_bearer(&s, &headers) {
        return *r;
    }
    match query.get("api-version") {
        None => {
            return arm_error(
                StatusCode::BAD_REQUEST,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests."
                    .into(),
            );
        }
        Some(v) if !API_VERSIONS.contains(&v.as_str()) => {
            return arm_error(
                StatusCode::BAD_REQUEST,
                "InvalidApiVersionParameter",
                format!(
                    "The api-version '{v}' is invalid. The supported versions are '{}'.",
                    API_VERSIONS.join(",")
                ),
            );
        }
        Some(_) => {}
    }
    let name = ws.to_lowercase();
    *s.arm_calls.lock().unwrap().entry(name.clone()).or_default() += 1;
    let scripted = s
        .scripts
        .lock()
        .unwrap()
        .get_mut(&name)
        .and_then(VecDeque::pop_front)
        .or_else(|| s.always.lock().unwrap().get(&name).cloned());
    let scope = format!(
        "subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.MachineLearningServices/workspaces/{ws}"
    );
    if let Some(r) = scripted
        .as_ref()
        .and_then(|r| scripted_error(r, &s.identity.client_id, &scope))
    {
        return r;
    }
    match scripted {
        Some(Reply::NotFound) => return not_found(&rg, &ws),
        Some(Reply::Delay(d)) => tokio::time::sleep(d).await,
        Some(Reply::Hang) => return hang().await,
        _ => {}
    }
    let uri = s
        .workspaces
        .lock()
        .unwrap()
        .get(&ws_key(&sub, &rg, &ws))
        .cloned();
    match uri {
        Some(uri) => axum::Json(json!({
            "id": format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.MachineLearningServices/workspaces/{ws}"),
            "name": ws,
            "type": "Microsoft.MachineLearningServices/workspaces",
            "location": "eastus",
            "kind": "Default",
            "properties": {
                "provisioningState": "Succeeded",
                "discoveryUrl": "https://eastus.api.azureml.ms/discovery",
                "mlFlowTrackingUri": uri,
            },
        }))
        .into_response(),
        None => not_found(&rg, &ws),
    }
}

/// A request that gets no answer: the caller's timeout ends it (also used by `fake_cloud`).
pub async fn hang() -> Response {
    tokio::time::sleep(Duration::from_secs(600)).await;
    StatusCode::GATEWAY_TIMEOUT.into_response()
}

/// ARM's answer to a scripted failure (also used by `fake_cloud`); None for `Reply::Delay`,
/// `Reply::Hang` and `Reply::NotFound`, which the caller handles.
pub fn scripted_error(reply: &Reply, client_id: &str, scope: &str) -> Option<Response> {
    match reply {
        Reply::Throttled { retry_after_secs } => {
            let mut r = arm_error(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "The request is being throttled.".into(),
            );
            r.headers_mut()
                .insert("retry-after", retry_after_secs.to_string().parse().unwrap());
            Some(r)
        }
        Reply::ServerError => Some(arm_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "Encountered internal server error.".into(),
        )),
        Reply::Forbidden => Some(arm_error(
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
            format!(
                "The client '{client_id}' with object id '{client_id}' does not have authorization to perform action 'Microsoft.MachineLearningServices/workspaces/read' over scope '/{scope}' or the scope is invalid."
            ),
        )),
        Reply::NotFound | Reply::Delay(_) | Reply::Hang => None,
    }
}

fn not_found(rg: &str, ws: &str) -> Response {
    arm_error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!(
            "The Resource 'Microsoft.MachineLearningServices/workspaces/{ws}' under resource group '{rg}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
        ),
    )
}
