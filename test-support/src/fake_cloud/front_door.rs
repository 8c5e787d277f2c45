//! The Azure ML MLflow front door, `https://westeurope.api.azureml.ms`: bearer checked, MLflow
//! REST forwarded to a real `mlflow server --serve-artifacts` with the run's `artifact_uri`
//! rewritten to `azureml://`, `batch/metadata` answering SAS upload URLs on this same host, and
//! the SAS `PUT` (signature checked, no bearer) relayed into the server's artifact store.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AML_HOST;
use crate::azure::{BearerRefusal, Call, Core, b64url, now};

const STORAGE_ACCOUNT: &str = "fakeamlstorage";
const STORAGE_CONTAINER: &str = "azureml";

/// The front door's state: the shared core (bearer checks, logs), its SAS key, and the MLflow
/// server it forwards to.
#[derive(Clone)]
pub(super) struct FrontDoor {
    pub core: Core,
    pub sas_key: Vec<u8>,
    pub mlflow_url: String,
    pub http: reqwest::Client,
}

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

fn sas_signature(s: &FrontDoor, path: &str, expiry: &str) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(&s.sas_key);
    h.update(path.as_bytes());
    h.update(b"\n");
    h.update(expiry.as_bytes());
    b64url(&h.finalize())
}

pub(super) async fn serve(
    State(s): State<FrontDoor>,
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
    let call = Call::new("aml", &method, &path, 401);
    let claims = match s.core.verify_bearer(&headers) {
        Ok(c) => c,
        Err(refusal) => return refuse_bearer(&s.core, call, &refusal),
    };
    let response = if let Some((scope, rest)) = split_scope(&path, "/mlflow/v2.0/") {
        forward_mlflow(&s, &method, scope, rest, uri.query(), &headers, body).await
    } else if let Some((scope, rest)) = split_scope(&path, "/history/v1.0/") {
        batch_metadata(&s, &method, scope, rest, body).await
    } else {
        (StatusCode::NOT_FOUND, format!("{path} is not faked")).into_response()
    };
    let status = response.status().as_u16();
    s.core
        .record_call(AML_HOST, Call { status, ..call }.by(Some(&claims)));
    response
}

/// The front door's 401: Azure ML's error envelope (code `UserError`, inner
/// `AuthorizationError`, as it answers a missing bearer) with ARM's wording of the reason, and
/// the `WWW-Authenticate` challenge; logged under the caller an expired token still names.
fn refuse_bearer(core: &Core, call: Call, refusal: &BearerRefusal) -> Response {
    let refused = Call {
        error: Some(refusal.code().into()),
        ..call.by(refusal.claims())
    };
    core.record_call(AML_HOST, refused);
    let body = json!({
        "error": {
            "code": "UserError",
            "message": refusal.message(),
            "innerError": {"code": "AuthorizationError", "innerError": {"code": refusal.code()}},
        },
        "environment": "westeurope",
        "location": "westeurope",
        "time": jiff::Timestamp::now().to_string(),
        "componentName": "mlflow",
    });
    let mut response = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    let challenge = refusal.www_authenticate(&core.addresses().authority);
    if let Ok(value) = challenge.parse() {
        response
            .headers_mut()
            .insert(http::header::WWW_AUTHENTICATE, value);
    }
    response
}

async fn forward_mlflow(
    s: &FrontDoor,
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
    s: &FrontDoor,
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
    s: &FrontDoor,
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
    s.core.line(format!(
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
