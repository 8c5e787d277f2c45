//! Azure Resource Manager's workspace GET: bearer and api-version checked, the workspace's
//! `properties.mlFlowTrackingUri` answered from the fake's map, or a scripted failure.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::{Call, Core};

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

/// Scripted answers: a queue per workspace first, then a standing answer for the workspace,
/// then one for every workspace.
#[derive(Default)]
pub(crate) struct Replies {
    scripts: HashMap<String, VecDeque<Reply>>,
    always: HashMap<String, Reply>,
    every: Option<Reply>,
}

impl Replies {
    pub fn script(&mut self, ws: &str, replies: impl IntoIterator<Item = Reply>) {
        let queue = self.scripts.entry(ws.to_lowercase()).or_default();
        queue.extend(replies);
    }

    pub fn always(&mut self, ws: Option<&str>, reply: Option<Reply>) {
        match (ws, reply) {
            (None, reply) => self.every = reply,
            (Some(ws), Some(r)) => drop(self.always.insert(ws.to_lowercase(), r)),
            (Some(ws), None) => drop(self.always.remove(&ws.to_lowercase())),
        }
    }

    fn next(&mut self, ws: &str) -> Option<Reply> {
        let queued = self.scripts.get_mut(ws).and_then(VecDeque::pop_front);
        queued
            .or_else(|| self.always.get(ws).cloned())
            .or_else(|| self.every.clone())
    }
}

/// The workspace route and ARM's answer to any other path.
pub fn routes() -> Router<Core> {
    Router::new()
        .route(
            "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.MachineLearningServices/workspaces/{ws}",
            get(workspace),
        )
        .fallback(unknown_path)
}

/// An ARM error answer.
pub fn error(status: StatusCode, code: &str, message: String) -> Response {
    let body = json!({"error": {"code": code, "message": message}});
    (status, axum::Json(body)).into_response()
}

fn scope(sub: &str, rg: &str, ws: &str) -> String {
    format!(
        "subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.MachineLearningServices/workspaces/{ws}"
    )
}

fn host(core: &Core) -> &str {
    core.0.addresses.resource.trim_start_matches("https://")
}

async fn unknown_path(State(core): State<Core>, uri: Uri) -> Response {
    let path = uri.path();
    core.line(format!("GET {}{path} 404 (not faked)", host(&core)));
    let why = format!("The resource path '{path}' is not known to this fake ARM.");
    error(StatusCode::NOT_FOUND, "InvalidResourceType", why)
}

/// ARM's 401 for a bearer it does not accept, with its `WWW-Authenticate` challenge; logged
/// under the caller an expired token still names.
fn refuse_bearer(core: &Core, call: Call, refusal: &super::BearerRefusal) -> Response {
    let refused = Call {
        status: 401,
        error: Some(refusal.code().into()),
        ..call.by(refusal.claims())
    };
    core.record_call(host(core), refused);
    let mut response = error(StatusCode::UNAUTHORIZED, refusal.code(), refusal.message());
    let challenge = refusal.www_authenticate(&core.0.addresses.authority);
    if let Ok(value) = challenge.parse() {
        response
            .headers_mut()
            .insert(http::header::WWW_AUTHENTICATE, value);
    }
    response
}

/// ARM's refusal of a missing or unknown api-version.
fn api_version_refusal(query: &HashMap<String, String>) -> Option<Response> {
    let bad = StatusCode::BAD_REQUEST;
    match query.get("api-version") {
        None => Some(error(
            bad,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.".into(),
        )),
        Some(v) if !API_VERSIONS.contains(&v.as_str()) => Some(error(
            bad,
            "InvalidApiVersionParameter",
            format!(
                "The api-version '{v}' is invalid. The supported versions are '{}'.",
                API_VERSIONS.join(",")
            ),
        )),
        Some(_) => None,
    }
}

async fn workspace(
    State(core): State<Core>,
    Path((sub, rg, ws)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let call = Call::new("arm", &Method::GET, uri.path(), 0);
    let claims = match core.verify_bearer(&headers) {
        Ok(claims) => claims,
        Err(refusal) => return refuse_bearer(&core, call, &refusal),
    };
    let call = call.by(Some(&claims));
    if let Some(refused) = api_version_refusal(&query) {
        let status = refused.status().as_u16();
        core.record_call(host(&core), Call { status, ..call });
        return refused;
    }
    let name = ws.to_lowercase();
    let reply = core.0.replies.lock().unwrap().next(&name);
    let client_id = call.client_id.clone().unwrap_or_default();
    let answer = answer(&core, reply, &client_id, (&sub, &rg, &ws));
    // Recorded before any delay, so a call the client gives up on still counts.
    let status = match &answer {
        Answer::Now(r) | Answer::After(r, _) => r.status().as_u16(),
        Answer::Never => 0,
    };
    let workspace = Some(name);
    core.record_call(
        host(&core),
        Call {
            status,
            workspace,
            ..call
        },
    );
    match answer {
        Answer::Now(response) => response,
        Answer::After(response, delay) => {
            tokio::time::sleep(delay).await;
            response
        }
        Answer::Never => super::hang().await,
    }
}

/// ARM's answer to one call, and when it gives it.
enum Answer {
    Now(Response),
    After(Response, Duration),
    /// Taken, never answered (status 0 in the call log).
    Never,
}

fn answer(
    core: &Core,
    reply: Option<Reply>,
    client_id: &str,
    (sub, rg, ws): (&str, &str, &str),
) -> Answer {
    let scope = scope(sub, rg, ws);
    let found = || match core.workspace_uri(sub, rg, ws) {
        Some(uri) => found(core, &scope, ws, &uri),
        None => not_found(rg, ws),
    };
    match reply {
        None => Answer::Now(found()),
        Some(Reply::Delay(d)) => Answer::After(found(), d),
        Some(Reply::Hang) => Answer::Never,
        Some(Reply::NotFound) => Answer::Now(not_found(rg, ws)),
        Some(other) => Answer::Now(scripted_error(&other, client_id, &scope)),
    }
}

fn found(core: &Core, scope: &str, ws: &str, tracking_uri: &str) -> Response {
    let region = core.0.addresses.region;
    axum::Json(json!({
        "id": format!("/{scope}"),
        "name": ws,
        "type": "Microsoft.MachineLearningServices/workspaces",
        "location": region,
        "kind": "Default",
        "properties": {
            "provisioningState": "Succeeded",
            "discoveryUrl": format!("https://{region}.api.azureml.ms/discovery"),
            "mlFlowTrackingUri": tracking_uri,
        },
    }))
    .into_response()
}

fn scripted_error(reply: &Reply, client_id: &str, scope: &str) -> Response {
    match reply {
        Reply::Throttled { retry_after_secs } => {
            let why = "The request is being throttled.";
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", why.into());
            let after = retry_after_secs.to_string().parse().unwrap();
            r.headers_mut().insert("retry-after", after);
            r
        }
        Reply::Forbidden => error(
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
            format!(
                "The client '{client_id}' with object id '{client_id}' does not have authorization to perform action 'Microsoft.MachineLearningServices/workspaces/read' over scope '/{scope}' or the scope is invalid."
            ),
        ),
        // ServerError; `answer` handles the replies that are not errors.
        _ => {
            let why = "Encountered internal server error.";
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                why.into(),
            )
        }
    }
}

fn not_found(rg: &str, ws: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!(
            "The Resource 'Microsoft.MachineLearningServices/workspaces/{ws}' under resource group '{rg}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
        ),
    )
}
