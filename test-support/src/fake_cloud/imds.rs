//! IMDS's managed-identity token endpoint, `http://169.254.169.254/metadata/identity/oauth2/token`:
//! `Metadata: true`, api-version, resource, and the user-assigned client id checked.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{ARM_RESOURCE, IMDS_IP};
use crate::azure::{Core, Exchange, now};

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

pub(super) async fn token(
    State(s): State<Core>,
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
        at: now(),
        assertion_issued_at: None,
    };
    let refuse = |status: StatusCode, error: &str, description: String| {
        (
            status,
            axum::Json(json!({"error": error, "error_description": description})),
        )
            .into_response()
    };
    let tenant = s.managed_identity_tenant(&client_id);
    let response = match imds_refusal(&q, &headers, &client_id, tenant.is_some()) {
        Some((status, error, description, logged)) => {
            exchange.status = status.as_u16();
            exchange.error = Some(logged);
            refuse(status, error, description)
        }
        None => {
            let tenant = tenant.unwrap_or_default();
            exchange.tenant = tenant.clone();
            let issued = s.access_token(&tenant, &client_id, "managed_identity", None);
            s.seen(
                format!("access token of {client_id} via IMDS"),
                &issued.token,
            );
            // IMDS writes its times as strings; they agree with the JWT's iat and exp.
            let expires_in = issued.expires_in().to_string();
            axum::Json(json!({
                "access_token": issued.token,
                "client_id": client_id,
                "expires_in": expires_in,
                "expires_on": issued.expires_on.to_string(),
                "ext_expires_in": expires_in,
                "not_before": issued.issued_at.to_string(),
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
    s.record_exchange(exchange);
    response
}
