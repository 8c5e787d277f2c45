//! What `check` and `explain` ask the API server: the webhook's configuration, and a pod sent
//! through the real admission chain as a server-side dry-run (nothing is stored; the webhook is
//! told `dryRun: true`), with the warnings the webhook returned.

use anyhow::Context;
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhook, MutatingWebhookConfiguration};
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::Value;

/// The name of our webhook inside the MutatingWebhookConfiguration (the chart's).
pub const WEBHOOK_NAME: &str = "pods.mlflow-operator.io";

/// A MutatingWebhookConfiguration that holds our webhook.
pub struct Install {
    pub config: String,
    pub webhook: MutatingWebhook,
}

/// Every MutatingWebhookConfiguration holding [`WEBHOOK_NAME`] (one per install).
pub async fn installs(client: &Client) -> anyhow::Result<Vec<Install>> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let list = api
        .list(&ListParams::default())
        .await
        .context("listing MutatingWebhookConfigurations")?;
    Ok(list
        .items
        .into_iter()
        .flat_map(|c| {
            let config = c.name_any();
            c.webhooks
                .unwrap_or_default()
                .into_iter()
                .filter(|w| w.name == WEBHOOK_NAME)
                .map(move |webhook| Install {
                    config: config.clone(),
                    webhook,
                })
        })
        .collect())
}

/// What the admission chain did with a pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// Admitted: the pod as it would be stored, and the warnings returned.
    Admitted { pod: Value, warnings: Vec<String> },
    /// Our webhook refused it, with its message.
    Refused { message: String },
    /// The API server could not call our webhook (unreachable, TLS, timeout), with its message.
    Unreachable { message: String },
    /// Anything else the API server refused (validation, another admission plugin, RBAC).
    Failed { status: u16, message: String },
}

/// Sends `pod` through the API server as a server-side dry-run create in `namespace`.
pub async fn dry_run(client: &Client, namespace: &str, pod: &Value) -> anyhow::Result<Admission> {
    let url = format!("/api/v1/namespaces/{namespace}/pods");
    let params = PostParams {
        dry_run: true,
        field_manager: Some("mlflow-operator-cli".to_string()),
    };
    let req = kube::core::Request::new(url)
        .create(&params, serde_json::to_vec(pod)?)
        .context("building the dry-run request")?;
    let resp = client
        .send(req.map(kube::client::Body::from))
        .await
        .context("sending a dry-run pod to the API server")?;
    let status = resp.status().as_u16();
    let warnings: Vec<String> = resp
        .headers()
        .get_all("warning")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(warning_text)
        .collect();
    let body = resp.into_body().collect_bytes().await?;
    let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if (200..300).contains(&status) {
        return Ok(Admission::Admitted {
            pod: value,
            warnings,
        });
    }
    let message = value["message"].as_str().unwrap_or_default().to_string();
    Ok(classify_failure(status, message))
}

/// Which part of the chain a failed admission came from, by the API server's own wording.
pub fn classify_failure(status: u16, message: String) -> Admission {
    let denied = format!("admission webhook \"{WEBHOOK_NAME}\" denied the request: ");
    if let Some((_, ours)) = message.split_once(&denied) {
        return Admission::Refused {
            message: ours.to_string(),
        };
    }
    if message.contains(&format!("failed calling webhook \"{WEBHOOK_NAME}\"")) {
        return Admission::Unreachable { message };
    }
    Admission::Failed { status, message }
}

/// The text of an HTTP `Warning` header (`299 - "text"`), unquoted.
pub fn warning_text(header: &str) -> String {
    let text = header.splitn(3, ' ').nth(2).unwrap_or(header).trim();
    let text = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    text.replace("\\\"", "\"").replace("\\\\", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warning_headers_are_unquoted() {
        for (header, want) in [
            (
                r#"299 - "mlflow-operator: container \"a\" skipped""#,
                r#"mlflow-operator: container "a" skipped"#,
            ),
            ("299 - plain", "plain"),
            ("odd", "odd"),
        ] {
            assert_eq!(warning_text(header), want);
        }
    }

    #[test]
    fn failures_are_told_apart_by_the_api_servers_wording() {
        let refused = r#"admission webhook "pods.mlflow-operator.io" denied the request: mlflow-operator: no MlflowWorkspaceBinding"#;
        let unreachable = r#"Internal error occurred: failed calling webhook "pods.mlflow-operator.io": failed to call webhook: Post "https://x/mutate": tls: failed to verify certificate: x509: certificate signed by unknown authority"#;
        assert_eq!(
            classify_failure(400, refused.into()),
            Admission::Refused {
                message: "mlflow-operator: no MlflowWorkspaceBinding".into()
            }
        );
        assert!(matches!(
            classify_failure(500, unreachable.into()),
            Admission::Unreachable { .. }
        ));
        assert!(matches!(
            classify_failure(403, "pods is forbidden".into()),
            Admission::Failed { status: 403, .. }
        ));
    }
}
