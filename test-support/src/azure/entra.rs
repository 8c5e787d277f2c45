//! Entra ID's token endpoint `POST /{tenant}/oauth2/v2.0/token`, its error answers (AADSTS codes
//! as the real one gives them), and the bearer check ARM and the front door make.

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};

use super::{Core, Exchange, b64url, now};

pub const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

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

#[derive(Clone, Debug)]
pub(crate) struct App {
    pub tenant: String,
    pub credentials: Vec<Credential>,
}

impl App {
    pub fn new(tenant: &str) -> Self {
        let tenant = tenant.to_string();
        Self {
            tenant,
            credentials: Vec::new(),
        }
    }

    fn federated_subjects(&self) -> Vec<&String> {
        let subjects = self.credentials.iter().filter_map(|c| match c {
            Credential::Federated(s) => Some(s),
            _ => None,
        });
        subjects.flatten().collect()
    }

    fn certificate(&self) -> Option<(&[u8], &[u8])> {
        self.credentials.iter().find_map(|c| match c {
            Credential::Certificate {
                der,
                public_key_der,
            } => Some((der.as_slice(), public_key_der.as_slice())),
            _ => None,
        })
    }

    fn has_secret(&self, secret: &str) -> bool {
        let same = |c: &Credential| matches!(c, Credential::Secret(s) if s == secret);
        self.credentials.iter().any(same)
    }
}

/// Why a token request is refused: status, OAuth error, AADSTS description.
type Refusal = (StatusCode, &'static str, String);

fn refusal(status: StatusCode, error: &'static str, description: String) -> Refusal {
    (status, error, description)
}

/// The token route, for the caller to add its own discovery routes and state to.
pub fn routes() -> Router<Core> {
    Router::new().route("/{tenant}/oauth2/v2.0/token", post(token))
}

/// An Entra ID error answer, AADSTS code included.
pub fn error(status: StatusCode, error: &str, description: &str) -> Response {
    let code = description
        .strip_prefix("AADSTS")
        .and_then(|s| s.split(':').next())
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0);
    let body = json!({
        "error": error,
        "error_description": description,
        "error_codes": [code],
        "timestamp": jiff::Timestamp::now().to_string(),
    });
    (status, axum::Json(body)).into_response()
}

/// An access token this fake issued, and the times its answer must agree with.
pub(crate) struct Issued {
    pub token: String,
    pub issued_at: i64,
    pub expires_on: i64,
}

impl Issued {
    /// `expires_in` of the answer: exactly the JWT's `exp` minus its `iat`.
    pub fn expires_in(&self) -> i64 {
        self.expires_on - self.issued_at
    }
}

/// Why ARM or the front door refuses a bearer, in ARM's terms.
#[derive(Clone, Debug)]
pub enum BearerRefusal {
    /// No `Authorization: Bearer` header.
    Missing(String),
    /// Not a token of this fake for this resource (signature, audience, issuer).
    Invalid(String),
    /// A token of this fake whose `exp` has passed; its claims still name the caller.
    Expired { claims: Value, now: i64 },
}

/// A Unix time as ARM writes times in its messages (`12/13/2018 7:25:27 AM`, UTC).
fn arm_time(unix: i64) -> String {
    jiff::Timestamp::from_second(unix)
        .map(|t| t.strftime("%-m/%-d/%Y %-I:%M:%S %p").to_string())
        .unwrap_or_else(|_| unix.to_string())
}

impl BearerRefusal {
    /// ARM's error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing(_) => "AuthenticationFailed",
            Self::Invalid(_) => "InvalidAuthenticationToken",
            Self::Expired { .. } => "ExpiredAuthenticationToken",
        }
    }

    /// ARM's error message.
    pub fn message(&self) -> String {
        match self {
            Self::Missing(m) | Self::Invalid(m) => m.clone(),
            Self::Expired { claims, now } => format!(
                "The access token expiry UTC time '{}' is earlier than current UTC time '{}'.",
                arm_time(claims["exp"].as_i64().unwrap_or_default()),
                arm_time(*now)
            ),
        }
    }

    /// The RFC 6750 challenge ARM sends with every 401, naming where to get a new token.
    pub fn www_authenticate(&self, authority: &str) -> String {
        let description = match self {
            Self::Missing(_) => {
                "The authentication failed because of missing 'Authorization' header."
            }
            Self::Invalid(_) => "The access token is invalid.",
            Self::Expired { .. } => "The access token has expired.",
        };
        format!(
            "Bearer authorization_uri=\"{authority}/\", error=\"invalid_token\", error_description=\"{description}\""
        )
    }

    /// The refused token's claims, when it was one of this fake's (expired).
    pub fn claims(&self) -> Option<&Value> {
        match self {
            Self::Expired { claims, .. } => Some(claims),
            _ => None,
        }
    }
}

impl Core {
    /// An access token of this fake for the ARM resource, naming the app and how it proved
    /// itself (so ARM and the front door log who called), living the configured lifetime.
    pub(crate) fn access_token(
        &self,
        tenant: &str,
        client_id: &str,
        via: &str,
        subject: Option<&str>,
    ) -> Issued {
        let now = now();
        let exp = now + self.token_lifetime().as_secs() as i64;
        let claims = json!({
            "iss": format!("https://sts.windows.net/{tenant}/"),
            "aud": self.0.addresses.resource,
            "iat": now, "nbf": now, "exp": exp,
            "appid": client_id,
            "tid": tenant,
            "sub": subject.unwrap_or(client_id),
            "idtyp": "app",
            "fake_via": via,
        });
        let key = EncodingKey::from_secret(&self.0.signing_key);
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap();
        Issued {
            token,
            issued_at: now,
            expires_on: exp,
        }
    }

    /// The caller's token claims, or why ARM would refuse it. A token is good until its `exp`
    /// (no leeway: stricter than Azure's few minutes of clock skew, so a client that leans on
    /// the skew fails here first).
    pub(crate) fn verify_bearer(&self, headers: &HeaderMap) -> Result<Value, BearerRefusal> {
        let auth = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let missing = |m: &str| BearerRefusal::Missing(format!("Authentication failed. {m}"));
        let auth = auth.ok_or_else(|| missing("The 'Authorization' header is missing."))?;
        let token = auth
            .strip_prefix("Bearer ")
            .ok_or_else(|| missing("The 'Authorization' header is not a bearer token."))?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[self.0.addresses.resource.as_str()]);
        validation.validate_exp = false;
        let key = DecodingKey::from_secret(&self.0.signing_key);
        let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
            .map_err(|e| BearerRefusal::Invalid(format!("The access token is invalid: {e}.")))?
            .claims;
        let tid = claims["tid"].as_str().unwrap_or_default();
        if claims["iss"] != format!("https://sts.windows.net/{tid}/") {
            let why = "The access token's issuer is not its tenant's.";
            return Err(BearerRefusal::Invalid(why.into()));
        }
        let now = now();
        match claims["exp"].as_i64() {
            Some(exp) if now < exp => Ok(claims),
            Some(_) => Err(BearerRefusal::Expired { claims, now }),
            None => Err(BearerRefusal::Invalid(
                "The access token has no expiry.".into(),
            )),
        }
    }

    fn token_endpoint(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/token", self.0.addresses.authority)
    }

    fn knows_tenant(&self, tenant: &str) -> bool {
        let apps = self.0.apps.lock().unwrap();
        let managed = self.0.managed.lock().unwrap();
        apps.values().any(|a| a.tenant == tenant) || managed.values().any(|t| t == tenant)
    }
}

async fn token(State(core): State<Core>, Path(tenant): Path<String>, body: Bytes) -> Response {
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
        at: now(),
        assertion_issued_at: None,
    };
    for key in ["client_assertion", "client_secret"] {
        if let Some(v) = form.get(key) {
            core.seen(format!("{key} of {client_id}"), v);
        }
    }
    let outcome = if core.0.entra_down.load(std::sync::atomic::Ordering::SeqCst) {
        let why = "AADSTS90033: A transient error has occurred. Please try again.";
        Err(refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            why.into(),
        ))
    } else {
        check_request(&core, &tenant, &form, &mut exchange).await
    };
    let response = match outcome {
        Ok(()) => issue(&core, &exchange),
        Err((status, code, description)) => {
            exchange.status = status.as_u16();
            exchange.error = Some(description.clone());
            error(status, code, &description)
        }
    };
    core.line(exchange_line(&core, &exchange));
    core.record_exchange(exchange);
    response
}

fn issue(core: &Core, exchange: &Exchange) -> Response {
    let (client_id, via) = (&exchange.client_id, &exchange.via);
    let subject = exchange.subject.as_deref();
    let issued = core.access_token(&exchange.tenant, client_id, via, subject);
    core.seen(
        format!("access token of {client_id} via {via}"),
        &issued.token,
    );
    axum::Json(json!({
        "token_type": "Bearer",
        "expires_in": issued.expires_in(),
        "ext_expires_in": issued.expires_in(),
        "access_token": issued.token,
    }))
    .into_response()
}

fn exchange_line(core: &Core, e: &Exchange) -> String {
    let host = core.0.addresses.authority.trim_start_matches("https://");
    let subject = e.subject.as_deref().map(|x| format!(" subject={x}"));
    let read = e.assertion_issued_at.map(|x| format!(" assertion_iat={x}"));
    let error = e.error.as_deref().map(|x| format!(" error={x}"));
    format!(
        "POST {host}/{}/oauth2/v2.0/token {} client_id={} via={}{}{}{}",
        e.tenant,
        e.status,
        e.client_id,
        e.via,
        subject.unwrap_or_default(),
        read.unwrap_or_default(),
        error.unwrap_or_default(),
    )
}

/// The request's shape, then the app, its tenant and the scope, then its proof.
async fn check_request(
    core: &Core,
    tenant: &str,
    form: &HashMap<String, String>,
    exchange: &mut Exchange,
) -> Result<(), Refusal> {
    let bad = StatusCode::BAD_REQUEST;
    if !core.knows_tenant(tenant) {
        let why = format!("AADSTS90002: Tenant '{tenant}' not found.");
        return Err(refusal(bad, "invalid_tenant", why));
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        let why = "AADSTS70003: The app requested an unsupported grant type.";
        return Err(refusal(bad, "unsupported_grant_type", why.into()));
    }
    let client_id = &exchange.client_id;
    let app = core.0.apps.lock().unwrap().get(client_id).cloned();
    let Some(app) = app.filter(|a| a.tenant == tenant) else {
        let why = format!(
            "AADSTS700016: Application with identifier '{client_id}' was not found in the directory '{tenant}'."
        );
        return Err(refusal(bad, "unauthorized_client", why));
    };
    let scope = form.get("scope").cloned().unwrap_or_default();
    if scope != format!("{}/.default", core.0.addresses.resource) {
        let why = format!(
            "AADSTS500011: The resource principal named {scope} was not found in the tenant named {tenant}."
        );
        return Err(refusal(bad, "invalid_scope", why));
    }
    match (form.get("client_assertion"), form.get("client_secret")) {
        (Some(assertion), _) => {
            if form.get("client_assertion_type").map(String::as_str) != Some(JWT_BEARER) {
                let why = "AADSTS50027: client_assertion_type must be jwt-bearer.";
                return Err(refusal(bad, "invalid_request", why.into()));
            }
            check_assertion(core, &app, assertion, tenant, exchange).await
        }
        (None, Some(secret)) => check_secret(&app, secret, exchange),
        (None, None) => Err(refusal(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "AADSTS7000218: The request body must contain the following parameter: 'client_assertion' or 'client_secret'.".into(),
        )),
    }
}

fn check_secret(app: &App, secret: &str, exchange: &mut Exchange) -> Result<(), Refusal> {
    exchange.via = "client_secret".into();
    if app.has_secret(secret) {
        return Ok(());
    }
    let why = format!(
        "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
        exchange.client_id
    );
    Err(refusal(StatusCode::UNAUTHORIZED, "invalid_client", why))
}

/// A federated ServiceAccount token for one of the app's subjects, or an assertion signed with
/// its certificate.
async fn check_assertion(
    core: &Core,
    app: &App,
    assertion: &str,
    tenant: &str,
    exchange: &mut Exchange,
) -> Result<(), Refusal> {
    let unauthorized = |why: String| refusal(StatusCode::UNAUTHORIZED, "invalid_client", why);
    let subjects = app.federated_subjects();
    if let Some((der, public_key)) = app.certificate().filter(|_| subjects.is_empty()) {
        exchange.via = "certificate".into();
        let audience = core.token_endpoint(tenant);
        return verify_certificate_assertion(
            assertion,
            der,
            public_key,
            &audience,
            &exchange.client_id,
        )
        .map_err(|e| {
            unauthorized(format!(
                "AADSTS700027: Client assertion failed signature validation: {e}."
            ))
        });
    }
    exchange.via = "federated".into();
    let no_match =
        "AADSTS70021: No matching federated identity record found for presented assertion.";
    if subjects.is_empty() {
        return Err(unauthorized(no_match.into()));
    }
    let keys = &core.0.issuer_keys;
    let claims = signed_service_account_token(&core.0.kube, keys, &core.0.sa_issuer, assertion)
        .await
        .map_err(|e| {
            unauthorized(format!(
                "AADSTS700211: The client assertion could not be validated: {e}."
            ))
        })?;
    let sub = claims["sub"].as_str().unwrap_or_default().to_string();
    exchange.subject = Some(sub.clone());
    exchange.assertion_issued_at = claims["iat"].as_i64();
    assertion_in_time(&claims).map_err(unauthorized)?;
    if subjects.contains(&&sub) {
        return Ok(());
    }
    let issuer = claims["iss"].as_str().unwrap_or_default();
    Err(unauthorized(format!(
        "{no_match} Assertion Issuer: '{issuer}'. Assertion Subject: '{sub}'. Assertion Audience: '{TOKEN_EXCHANGE_AUDIENCE}'."
    )))
}

/// A projected ServiceAccount token checked as Entra ID checks a federated assertion: signed by
/// one of the API server's keys (its JWKS), issuer, audience `api://AzureADTokenExchange`,
/// expiry; returns its claims.
pub async fn verify_service_account_token(
    kube: &kube::Client,
    issuer: &str,
    token: &str,
) -> Result<Value, String> {
    let keys = IssuerKeys::default();
    let claims = signed_service_account_token(kube, &keys, issuer, token).await?;
    assertion_in_time(&claims)?;
    Ok(claims)
}

/// Entra ID's refusal of an assertion outside its `nbf`..`exp` (no leeway).
fn assertion_in_time(claims: &Value) -> Result<(), String> {
    let at = |k: &str| claims[k].as_i64();
    let now = now();
    let (from, until) = (at("nbf").or(at("iat")).unwrap_or(i64::MIN), at("exp"));
    if until.is_some_and(|exp| now < exp) && from <= now {
        return Ok(());
    }
    let time = |t: Option<i64>| {
        t.and_then(|s| jiff::Timestamp::from_second(s).ok())
            .map_or_else(|| "-".to_string(), |t| t.to_string())
    };
    Err(format!(
        "AADSTS700024: Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}.",
        time(Some(now)),
        time(at("nbf").or(at("iat"))),
        time(until)
    ))
}

/// The API server's signing keys (its JWKS) as Entra ID holds an issuer's keys: read once and
/// again only for a key id it does not know (the issuer's keys changed), not on every exchange,
/// so that an exchange while the API server restarts is checked like any other.
#[derive(Default)]
pub(crate) struct IssuerKeys(tokio::sync::Mutex<Option<JwkSet>>);

impl IssuerKeys {
    /// The key `kid`, read from the API server when the keys held lack it.
    async fn key(&self, kube: &kube::Client, kid: &str) -> Result<Jwk, String> {
        let mut held = self.0.lock().await;
        if let Some(jwk) = held.as_ref().and_then(|keys| keys.find(kid)) {
            return Ok(jwk.clone());
        }
        let request = http::Request::get("/openid/v1/jwks")
            .body(Vec::new())
            .unwrap();
        let jwks_raw = kube
            .request_text(request)
            .await
            .map_err(|e| format!("reading the issuer's keys: {e}"))?;
        let keys: JwkSet =
            serde_json::from_str(&jwks_raw).map_err(|e| format!("issuer keys: {e}"))?;
        let jwk = keys.find(kid).cloned();
        *held = Some(keys);
        jwk.ok_or_else(|| format!("key {kid} is not one of the issuer's keys"))
    }
}

/// The token's claims once its signature (one of the API server's keys), issuer and audience
/// check out; its times are `assertion_in_time`'s.
async fn signed_service_account_token(
    kube: &kube::Client,
    keys: &IssuerKeys,
    issuer: &str,
    token: &str,
) -> Result<Value, String> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| format!("not a JWT: {e}"))?;
    let kid = header.kid.as_deref().ok_or("the assertion has no kid")?;
    let jwk = keys.key(kube, kid).await?;
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[TOKEN_EXCHANGE_AUDIENCE]);
    validation.set_issuer(&[issuer]);
    validation.validate_exp = false;
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map(|d| d.claims)
        .map_err(|e| e.to_string())
}

/// The assertion MSAL signs with the certificate's key: RS256 with `x5t` (SHA-1 thumbprint) or
/// PS256 with `x5t#S256`; audience the token endpoint; issuer and subject the client id.
fn verify_certificate_assertion(
    token: &str,
    der: &[u8],
    public_key_der: &[u8],
    audience: &str,
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
    validation.set_audience(&[audience]);
    validation.set_issuer(&[client_id]);
    validation.sub = Some(client_id.to_string());
    validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    validation.leeway = 0;
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map(|_| ())
        .map_err(|e| e.to_string())
}
