//! Evidence, before a replica serves a certificate of a new CA, that the API server trusts that
//! CA for this webhook configuration.
//!
//! The new CA goes into the webhook's caBundle beside the old one first. Then the replica adds a
//! canary webhook to the same configuration, whose caBundle holds the new CA alone and which
//! matches nothing but a probe Lease of this replica, and reaches the probe listener (the
//! webhook's own Service or URL, on the probe port, path [`PATH`]) that presents the new
//! certificate. A dry-run creation of that Lease succeeds only once the API server calls the
//! canary and verifies the new certificate with the new CA: so it has read the configuration
//! at least as far as the canary, and the caBundle written before it. The canary's answer marks
//! the Lease ([`CALLED`]), and only a dry-run whose Lease carries the mark counts: before the API
//! server has read the canary, the dry-run succeeds without calling it. The canary is removed
//! after, whatever the outcome.

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::time::Instant;

/// The path the probe listener answers (any listener of the webhook answers it).
pub const PATH: &str = "/ca-probe";
/// The label of the probe Lease; its value names the replica's canary.
pub const LABEL: &str = "mlflow-operator.io/ca-probe";
/// How long a replica waits for the evidence before it serves the new certificate anyway, by
/// default (`--ca-probe-timeout`).
pub const BOUND: Duration = Duration::from_secs(30);
const EVERY: Duration = Duration::from_secs(1);
/// The annotation (under [`LABEL`]) the canary's answer puts on the probe Lease.
pub const CALLED: &str = "called";

/// The answer to a probe review: allowed, with the review's uid, and a patch that marks the
/// probe Lease as seen by the canary (the Lease is created without annotations).
pub fn answer(body: &[u8]) -> Vec<u8> {
    let uid = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["request"]["uid"].as_str().map(str::to_string))
        .unwrap_or_default();
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": uid, "allowed": true, "patchType": "JSONPatch", "patch": mark()},
    });
    serde_json::to_vec(&review).expect("JSON")
}

/// The base64 JSON patch of the canary's answer: the probe Lease's annotations, [`LABEL`] set to
/// [`CALLED`].
fn mark() -> String {
    use base64::Engine;
    let patch = json!([{"op": "add", "path": "/metadata/annotations", "value": {LABEL: CALLED}}]);
    base64::engine::general_purpose::STANDARD.encode(patch.to_string())
}

/// The probe Lease as the API server admitted it carries the canary's mark.
fn was_called(lease: &Lease) -> bool {
    let annotations = lease.metadata.annotations.as_ref();
    annotations.and_then(|a| a.get(LABEL)).map(String::as_str) == Some(CALLED)
}

/// The canary's client configuration: the webhook's own, on the probe `port` and [`PATH`].
pub fn canary_client(
    main: &WebhookClientConfig,
    port: u16,
    ca_pem: &str,
) -> Option<WebhookClientConfig> {
    let mut canary = WebhookClientConfig {
        ca_bundle: Some(k8s_openapi::ByteString(ca_pem.as_bytes().to_vec())),
        ..Default::default()
    };
    if let Some(service) = &main.service {
        let mut service = service.clone();
        service.port = Some(i32::from(port));
        service.path = Some(PATH.into());
        canary.service = Some(service);
    } else {
        let mut url = url::Url::parse(main.url.as_deref()?).ok()?;
        url.set_port(Some(port)).ok()?;
        url.set_path(PATH);
        url.set_query(None);
        canary.url = Some(url.to_string());
    }
    Some(canary)
}

/// The canary webhook of replica `tag`: called only for its probe Lease in `namespace`.
pub fn canary(tag: &str, client: WebhookClientConfig, namespace: &str) -> MutatingWebhook {
    serde_json::from_value(json!({
        "name": canary_name(tag),
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "failurePolicy": "Fail",
        "timeoutSeconds": 5,
        "rules": [{"operations": ["CREATE"], "apiGroups": ["coordination.k8s.io"],
                   "apiVersions": ["v1"], "resources": ["leases"], "scope": "Namespaced"}],
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
        "objectSelector": {"matchLabels": {LABEL: tag}},
        "clientConfig": client,
    }))
    .expect("a valid webhook")
}

pub fn canary_name(tag: &str) -> String {
    format!("{tag}.ca-probe.mlflow-operator.io")
}

/// A short name for this replica usable in a label value and a webhook name.
pub fn tag(identity: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(identity.as_bytes());
    digest[..5].iter().map(|b| format!("{b:02x}")).collect()
}

/// Where a replica probes from: its configuration, its namespace (the probe Lease's), its tag.
#[derive(Clone, Debug)]
pub struct Probe {
    pub webhook_config: String,
    pub namespace: String,
    pub port: u16,
    pub tag: String,
    /// How long to wait for the evidence (default [`BOUND`]).
    pub bound: Duration,
}

impl Probe {
    /// Waits, at most its bound, until the API server verifies a certificate of `ca_pem` for
    /// the configuration; Ok with how long it took, or Err with the last failure.
    pub async fn await_trust(&self, client: &Client, ca_pem: &str) -> Result<Duration, String> {
        let started = Instant::now();
        let mut added = false;
        let outcome = loop {
            let failure = if added {
                match self.dry_run(client).await {
                    Ok(()) => break Ok(started.elapsed()),
                    Err(e) => e,
                }
            } else {
                match self.add_canary(client, ca_pem).await {
                    Ok(()) => {
                        added = true;
                        continue;
                    }
                    Err(e) => format!("adding the canary webhook: {e}"),
                }
            };
            let left = self.bound.saturating_sub(started.elapsed());
            if left.is_zero() {
                break Err(failure);
            }
            tokio::time::sleep(EVERY.min(left)).await;
        };
        if let Err(e) = self.remove_canary(client).await {
            tracing::warn!(error = %e, canary = %canary_name(&self.tag), "could not remove the canary webhook; it matches only this replica's probe Lease");
        }
        outcome
    }

    /// A dry-run creation of this replica's probe Lease, which only its canary is called for;
    /// Ok only when the canary was called (the Lease comes back marked).
    async fn dry_run(&self, client: &Client) -> Result<(), String> {
        let leases: Api<Lease> = Api::namespaced(client.clone(), &self.namespace);
        let lease: Lease = serde_json::from_value(json!({
            "metadata": {"name": format!("ca-probe-{}", self.tag), "labels": {LABEL: self.tag}},
        }))
        .expect("a valid Lease");
        let dry = PostParams {
            dry_run: true,
            ..Default::default()
        };
        let created = leases
            .create(&dry, &lease)
            .await
            .map_err(|e| e.to_string())?;
        match was_called(&created) {
            true => Ok(()),
            false => Err(
                "the dry-run did not reach the canary webhook: the API server has not read it yet"
                    .into(),
            ),
        }
    }

    /// Adds (or replaces) this replica's canary, cloned from the first webhook's client.
    async fn add_canary(&self, client: &Client, ca_pem: &str) -> Result<(), String> {
        let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
        let mwc = api
            .get(&self.webhook_config)
            .await
            .map_err(|e| e.to_string())?;
        let webhooks = mwc.webhooks.unwrap_or_default();
        let name = canary_name(&self.tag);
        let main = webhooks
            .iter()
            .find(|w| !w.name.ends_with(".ca-probe.mlflow-operator.io"))
            .ok_or("the configuration has no webhook")?;
        let cc = canary_client(&main.client_config, self.port, ca_pem)
            .ok_or("the webhook has neither a Service nor a URL")?;
        let entry = serde_json::to_value(canary(&self.tag, cc, &self.namespace)).expect("JSON");
        let at = webhooks.iter().position(|w| w.name == name);
        let rv = mwc.metadata.resource_version.unwrap_or_default();
        let op = match at {
            Some(i) => json!({"op": "replace", "path": format!("/webhooks/{i}"), "value": entry}),
            None => json!({"op": "add", "path": "/webhooks/-", "value": entry}),
        };
        let patch = json!([{"op": "test", "path": "/metadata/resourceVersion", "value": rv}, op]);
        self.patch(&api, patch).await
    }

    async fn remove_canary(&self, client: &Client) -> Result<(), String> {
        let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
        let mwc = api
            .get(&self.webhook_config)
            .await
            .map_err(|e| e.to_string())?;
        let name = canary_name(&self.tag);
        let Some(i) = mwc
            .webhooks
            .unwrap_or_default()
            .iter()
            .position(|w| w.name == name)
        else {
            return Ok(());
        };
        let path = format!("/webhooks/{i}");
        let patch = json!([{"op": "test", "path": format!("{path}/name"), "value": name},
                           {"op": "remove", "path": path}]);
        self.patch(&api, patch).await
    }

    async fn patch(
        &self,
        api: &Api<MutatingWebhookConfiguration>,
        patch: Value,
    ) -> Result<(), String> {
        let patch: json_patch::Patch = serde_json::from_value(patch).expect("a JSON patch");
        api.patch(
            &self.webhook_config,
            &PatchParams::default(),
            &Patch::<()>::Json(patch),
        )
        .await
        .map(drop)
        .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests;
