//! One fake of Azure's identity and resource services, the state and the checks both address
//! modes share: `fake_azure` serves it on loopback addresses for in-process controller tests,
//! `fake_cloud` under the real host names on the node for pods and the installed chart.
//!
//! - Entra ID's token endpoint (`entra`): an app directory per tenant, checking federated
//!   ServiceAccount tokens, client secrets and certificate assertions as Entra ID does, and
//!   issuing HS256 access tokens of this fake for the ARM resource, living `token_lifetime`
//!   (an hour unless a suite shortens it, as Entra ID's own lifetime policies can).
//! - Azure Resource Manager's workspace GET (`arm`): the bearer (expiry included) and the
//!   api-version checked, `properties.mlFlowTrackingUri` served from a mutable map, or scripted
//!   failures.
//!
//! Every token request and bearer call is logged (`log`), with the credentials that crossed.

pub mod arm;
pub mod entra;
mod log;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use arm::{API_VERSIONS, Reply};
pub use entra::{BearerRefusal, Credential, TOKEN_EXCHANGE_AUDIENCE, verify_service_account_token};
pub use log::{Call, Exchange, Seen};

/// Where the fake is reached and what it calls itself.
#[derive(Clone, Debug)]
pub struct Addresses {
    /// The Entra ID authority, `https://<host>[:port]`; certificate assertions are for its
    /// token endpoint.
    pub authority: String,
    /// ARM's base URL: the resource access tokens are for (scope `<resource>/.default`).
    pub resource: String,
    /// The Azure region workspaces are in (their discovery URL names it).
    pub region: &'static str,
    /// Print each request line to stderr with this prefix.
    pub echo: Option<&'static str>,
}

/// The shared state; cloned into every handler.
#[derive(Clone)]
pub struct Core(Arc<State>);

pub(crate) struct State {
    addresses: Addresses,
    sa_issuer: String,
    kube: kube::Client,
    /// The API server's JWKS, which federated assertions are checked against.
    issuer_keys: entra::IssuerKeys,
    signing_key: Vec<u8>,
    apps: Mutex<HashMap<String, entra::App>>,
    managed: Mutex<HashMap<String, String>>,
    workspaces: Mutex<HashMap<(String, String, String), String>>,
    replies: Mutex<arm::Replies>,
    entra_down: AtomicBool,
    /// Seconds from issue to `exp` of every access token Entra ID and IMDS issue.
    token_lifetime: AtomicI64,
    logs: Mutex<log::Logs>,
}

/// Entra ID's default access token lifetime (its answers say 3599 s).
const DEFAULT_TOKEN_LIFETIME: i64 = 3600;

/// Workspaces are matched case-insensitively, as ARM does.
fn ws_key(sub: &str, rg: &str, ws: &str) -> (String, String, String) {
    (sub.to_lowercase(), rg.to_lowercase(), ws.to_lowercase())
}

/// A request that gets no answer: the caller's timeout ends it.
pub(crate) async fn hang() -> axum::response::Response {
    use axum::response::IntoResponse;
    tokio::time::sleep(std::time::Duration::from_secs(600)).await;
    axum::http::StatusCode::GATEWAY_TIMEOUT.into_response()
}

/// Unpadded base64url, as JWT headers and SAS signatures use it.
pub(crate) fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Now, in Unix seconds.
pub(crate) fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// A fresh random key, so tokens of one fake are worthless to another.
pub(crate) fn random_key(what: &str) -> Vec<u8> {
    use sha2::Digest;
    let seed = format!("{what}{}{}", crate::random_suffix(), crate::random_suffix());
    sha2::Sha256::digest(seed.as_bytes()).to_vec()
}

impl Core {
    /// `kube` reads the API server's JWKS to verify federated assertions.
    pub fn new(kube: kube::Client, addresses: Addresses) -> Self {
        Self(Arc::new(State {
            addresses,
            sa_issuer: crate::cluster_env("CLUSTER_SA_ISSUER"),
            kube,
            issuer_keys: entra::IssuerKeys::default(),
            signing_key: random_key("tokens"),
            apps: Mutex::default(),
            managed: Mutex::default(),
            workspaces: Mutex::default(),
            replies: Mutex::default(),
            entra_down: AtomicBool::default(),
            token_lifetime: AtomicI64::new(DEFAULT_TOKEN_LIFETIME),
            logs: Mutex::default(),
        }))
    }

    pub fn addresses(&self) -> &Addresses {
        &self.0.addresses
    }

    /// Registers an application in `tenant`, or adds a credential to it.
    pub fn register_app(&self, tenant: &str, client_id: &str, credential: Credential) {
        self.app(tenant, client_id, |app| app.credentials.push(credential));
    }

    /// Registers an application in `tenant` with no credential yet (every proof it offers is
    /// refused as Entra ID refuses an unknown credential).
    pub fn register_app_without_credentials(&self, tenant: &str, client_id: &str) {
        self.app(tenant, client_id, |_| ());
    }

    fn app(&self, tenant: &str, client_id: &str, change: impl FnOnce(&mut entra::App)) {
        let mut apps = self.0.apps.lock().unwrap();
        let app = apps
            .entry(client_id.to_string())
            .or_insert_with(|| entra::App::new(tenant));
        app.tenant = tenant.to_string();
        change(app);
    }

    /// A user-assigned managed identity IMDS issues tokens for, in `tenant`.
    pub fn register_managed_identity(&self, tenant: &str, client_id: &str) {
        let mut managed = self.0.managed.lock().unwrap();
        managed.insert(client_id.to_string(), tenant.to_string());
    }

    /// The tenant of a registered managed identity.
    pub fn managed_identity_tenant(&self, client_id: &str) -> Option<String> {
        self.0.managed.lock().unwrap().get(client_id).cloned()
    }

    /// Creates or changes a workspace and the tracking URI ARM answers for it.
    pub fn set_workspace(&self, sub: &str, rg: &str, ws: &str, tracking_uri: &str) {
        let mut workspaces = self.0.workspaces.lock().unwrap();
        workspaces.insert(ws_key(sub, rg, ws), tracking_uri.to_string());
    }

    pub(crate) fn workspace_uri(&self, sub: &str, rg: &str, ws: &str) -> Option<String> {
        let workspaces = self.0.workspaces.lock().unwrap();
        workspaces.get(&ws_key(sub, rg, ws)).cloned()
    }

    /// Answers the next calls for workspace `ws` with `replies`, in order.
    pub fn script(&self, ws: &str, replies: impl IntoIterator<Item = Reply>) {
        self.0.replies.lock().unwrap().script(ws, replies);
    }

    /// Answers every call for `ws` (None for `ws`: for every workspace) with `reply`; a reply
    /// of None: normal answers again.
    pub fn always(&self, ws: Option<&str>, reply: Option<Reply>) {
        self.0.replies.lock().unwrap().always(ws, reply);
    }

    /// Entra ID answers 503 to every token request while `down`.
    pub fn entra_down(&self, down: bool) {
        self.0.entra_down.store(down, Ordering::SeqCst);
    }

    /// Access tokens issued from now on expire `lifetime` after their issue (whole seconds, at
    /// least one); ARM and the front door refuse them after that.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        let seconds = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX).max(1);
        self.0.token_lifetime.store(seconds, Ordering::SeqCst);
    }

    pub fn token_lifetime(&self) -> Duration {
        let seconds = self.0.token_lifetime.load(Ordering::SeqCst);
        Duration::from_secs(seconds.unsigned_abs())
    }

    /// ARM calls that reached workspace `ws` (bearer and api-version accepted).
    pub fn arm_calls(&self, ws: &str) -> usize {
        let ws = ws.to_lowercase();
        let logs = self.0.logs.lock().unwrap();
        let reached = |c: &&Call| c.service == "arm" && c.workspace.as_deref() == Some(&ws);
        logs.calls.iter().filter(reached).count()
    }

    pub fn exchanges(&self) -> Vec<Exchange> {
        self.0.logs.lock().unwrap().exchanges.clone()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.0.logs.lock().unwrap().calls.clone()
    }

    /// Every access token issued and every client assertion and client secret received.
    pub fn secrets_seen(&self) -> Vec<Seen> {
        self.0.logs.lock().unwrap().secrets.clone()
    }

    /// Every request every service saw, in order, one line each.
    pub fn request_log(&self) -> Vec<String> {
        self.0.logs.lock().unwrap().lines.clone()
    }

    pub(crate) fn seen(&self, what: String, value: &str) {
        let value = value.to_string();
        self.0
            .logs
            .lock()
            .unwrap()
            .secrets
            .push(Seen { what, value });
    }

    pub(crate) fn line(&self, line: String) {
        if let Some(prefix) = self.0.addresses.echo {
            eprintln!("{prefix}: {line}");
        }
        self.0.logs.lock().unwrap().lines.push(line);
    }

    pub(crate) fn record_exchange(&self, exchange: Exchange) {
        self.0.logs.lock().unwrap().exchanges.push(exchange);
    }

    /// Logs a bearer call, `host` naming the service in the request line.
    pub(crate) fn record_call(&self, host: &str, call: Call) {
        let refused = call.error.as_deref().map(|e| format!(" refused={e}"));
        self.line(format!(
            "{} {host}{} {} caller={} via={} subject={}{}",
            call.method,
            call.path,
            call.status,
            call.client_id.as_deref().unwrap_or("-"),
            call.via.as_deref().unwrap_or("-"),
            call.subject.as_deref().unwrap_or("-"),
            refused.unwrap_or_default(),
        ));
        self.0.logs.lock().unwrap().calls.push(call);
    }
}
