//! What the fake Azure services saw: token exchanges, bearer-authenticated calls, the
//! credentials that crossed them, and a line per request.

use axum::http::Method;
use serde_json::Value;

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
    /// When it was answered, in Unix seconds.
    pub at: i64,
    /// For a federated exchange: when the presented ServiceAccount token was issued (its
    /// `iat`), so a test sees which projected token a client read.
    pub assertion_issued_at: Option<i64>,
}

/// One bearer-authenticated call ARM or the front door answered.
#[derive(Clone, Debug)]
pub struct Call {
    pub service: &'static str,
    pub method: String,
    pub path: String,
    /// Status 0: taken and never answered.
    pub status: u16,
    /// The workspace an ARM call reached, once its bearer and api-version passed (lowercase).
    pub workspace: Option<String>,
    /// The caller, from its access token: client id, how it authenticated, and for workload
    /// identity the ServiceAccount subject.
    pub client_id: Option<String>,
    pub via: Option<String>,
    pub subject: Option<String>,
    /// Why the bearer was refused (`ExpiredAuthenticationToken`, ...), for a 401.
    pub error: Option<String>,
    /// When it was answered, in Unix seconds.
    pub at: i64,
}

impl Call {
    pub(crate) fn new(service: &'static str, method: &Method, path: &str, status: u16) -> Self {
        Self {
            service,
            method: method.to_string(),
            path: path.to_string(),
            status,
            workspace: None,
            client_id: None,
            via: None,
            subject: None,
            error: None,
            at: super::now(),
        }
    }

    /// The caller named by the access token's claims.
    pub(crate) fn by(mut self, claims: Option<&Value>) -> Self {
        let get = |k: &str| claims.and_then(|c| c[k].as_str()).map(str::to_string);
        self.client_id = get("appid");
        self.via = get("fake_via");
        self.subject = get("sub");
        self
    }
}

/// A credential that crossed the fakes: an access token they issued, or a client assertion or
/// client secret they were sent. None of them may ever appear in a log outside the fakes.
#[derive(Clone, Debug)]
pub struct Seen {
    /// What it is, e.g. `access token of <client id> via federated`.
    pub what: String,
    pub value: String,
}

#[derive(Default)]
pub(crate) struct Logs {
    pub lines: Vec<String>,
    pub exchanges: Vec<Exchange>,
    pub calls: Vec<Call>,
    pub secrets: Vec<Seen>,
}
