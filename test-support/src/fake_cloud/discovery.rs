//! Entra ID's discovery documents MSAL reads before it asks for a token: the instance
//! discovery and the tenant's OpenID configuration, under the real host name.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::ENTRA_HOST;
use crate::azure::Core;

fn token_endpoint(tenant: &str) -> String {
    format!("https://{ENTRA_HOST}/{tenant}/oauth2/v2.0/token")
}

pub(super) async fn instance(
    State(s): State<Core>,
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

pub(super) async fn openid_configuration(
    State(s): State<Core>,
    Path(tenant): Path<String>,
) -> Response {
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
