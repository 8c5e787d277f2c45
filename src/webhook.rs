//! The mutating admission webhook: AdmissionReview v1 over HTTPS on `/mutate`.
//!
//! A plain service over raw JSON (as linkerd's policy controller does): the pod is never
//! deserialized into typed structs, so the patch is computed against exactly what the API server
//! sent. Bindings and ServiceAccounts come from in-memory reflector caches; the only network call
//! on the admission path is one live ServiceAccount GET on a cache miss, and never one to Azure.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::binding::MlflowWorkspaceBinding;
use crate::certs::CertStore;
use crate::inject::{self, Defaults, NamespaceView, Plan};
use crate::metrics::Metrics;

/// The API server caps request bodies at 3 MiB; anything much larger is not from it.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// A parsed AdmissionReview request: only what the webhook needs, the object kept raw.
#[derive(Debug, Clone, PartialEq)]
pub struct ReviewRequest {
    pub uid: String,
    pub operation: String,
    pub namespace: String,
    pub dry_run: bool,
    pub object: Value,
}

/// Why a request could not be reviewed; each says what is wrong with it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReviewError {
    #[error("request body is not JSON: {0}")]
    NotJson(String),
    #[error(
        "not an admission.k8s.io/v1 AdmissionReview (apiVersion {api_version:?}, kind {kind:?}); set admissionReviewVersions: [v1]"
    )]
    NotAdmissionReview { api_version: String, kind: String },
    #[error("AdmissionReview has no request.uid")]
    NoUid,
    #[error("AdmissionReview request is missing {0}")]
    Missing(&'static str),
    #[error(
        "this webhook mutates core/v1 pods only, got {0}; the MutatingWebhookConfiguration rules should match pods on CREATE"
    )]
    WrongKind(String),
}

impl ReviewError {
    pub fn label(&self) -> &'static str {
        match self {
            ReviewError::NotJson(_) => "malformed",
            ReviewError::NotAdmissionReview { .. } => "malformed",
            ReviewError::NoUid => "malformed",
            ReviewError::Missing(_) => "malformed",
            ReviewError::WrongKind(_) => "wrong-kind",
        }
    }
}

/// The parts of an AdmissionReview the webhook reads. Everything else (userInfo, oldObject,
/// options) is skipped while parsing instead of being built into JSON values.
#[derive(serde::Deserialize)]
struct RawReview {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    request: Option<RawRequest>,
}

#[derive(serde::Deserialize)]
struct RawRequest {
    #[serde(default)]
    uid: String,
    kind: Option<RawGvk>,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    operation: String,
    #[serde(default)]
    object: Value,
    #[serde(rename = "dryRun", default)]
    dry_run: Option<bool>,
}

#[derive(serde::Deserialize)]
struct RawGvk {
    #[serde(default)]
    group: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    kind: String,
}

/// Parses an AdmissionReview. On error, returns the request uid when one could be read, so the
/// answer can still be a proper AdmissionReview the API server shows to the user.
pub fn parse_review(body: &[u8]) -> Result<ReviewRequest, (Option<String>, ReviewError)> {
    let raw: RawReview = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            // Valid JSON of the wrong shape: say what is wrong with it, with its uid if any.
            let v: Value = serde_json::from_slice(body)
                .map_err(|_| (None, ReviewError::NotJson(e.to_string())))?;
            let uid = v
                .pointer("/request/uid")
                .and_then(Value::as_str)
                .map(str::to_string);
            let (api_version, kind) = (
                v.get("apiVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                v.get("kind")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            );
            if api_version != "admission.k8s.io/v1" || kind != "AdmissionReview" {
                return Err((uid, ReviewError::NotAdmissionReview { api_version, kind }));
            }
            return Err((uid, ReviewError::NotJson(e.to_string())));
        }
    };
    let uid = raw
        .request
        .as_ref()
        .map(|r| r.uid.clone())
        .filter(|u| !u.is_empty());
    if raw.api_version != "admission.k8s.io/v1" || raw.kind != "AdmissionReview" {
        return Err((
            uid,
            ReviewError::NotAdmissionReview {
                api_version: raw.api_version,
                kind: raw.kind,
            },
        ));
    }
    let req = raw.request.ok_or((None, ReviewError::Missing("request")))?;
    let uid = uid.ok_or((None, ReviewError::NoUid))?;
    let err = |e| (Some(uid.clone()), e);
    let k = req
        .kind
        .ok_or_else(|| err(ReviewError::Missing("request.kind")))?;
    if !(k.group.is_empty() && k.version == "v1" && k.kind == "Pod") {
        let gvk = if k.group.is_empty() {
            format!("{}/{}", k.version, k.kind)
        } else {
            format!("{}/{}/{}", k.group, k.version, k.kind)
        };
        return Err(err(ReviewError::WrongKind(gvk)));
    }
    if req.operation.is_empty() {
        return Err(err(ReviewError::Missing("request.operation")));
    }
    let namespace = if req.namespace.is_empty() {
        req.object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    } else {
        req.namespace
    };
    Ok(ReviewRequest {
        uid,
        operation: req.operation,
        namespace,
        dry_run: req.dry_run.unwrap_or(false),
        object: req.object,
    })
}

/// The AdmissionReview answer for a plan.
pub fn review_response(uid: &str, plan: &Plan) -> Value {
    let response = match plan {
        Plan::Inject {
            binding: _,
            patch,
            warnings,
        } => {
            let mut r = json!({"uid": uid, "allowed": true});
            if !patch.0.is_empty() {
                let raw = serde_json::to_vec(patch).expect("a JSON patch serializes");
                r["patchType"] = json!("JSONPatch");
                r["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(raw));
            }
            if !warnings.is_empty() {
                r["warnings"] = json!(warnings);
            }
            r
        }
        Plan::Allow { warnings } => {
            let mut r = json!({"uid": uid, "allowed": true});
            if !warnings.is_empty() {
                r["warnings"] = json!(warnings);
            }
            r
        }
        Plan::Refuse {
            reason: _,
            message,
            binding: _,
        } => json!({
            "uid": uid,
            "allowed": false,
            "status": {"code": 403, "reason": "Forbidden", "message": message}
        }),
    };
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

/// An AdmissionReview that refuses a request the webhook cannot read.
pub fn error_response(uid: &str, err: &ReviewError) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": uid, "allowed": false, "status": {"code": 400, "reason": "BadRequest", "message": format!("mlflow-operator: {err}")}}
    })
}

/// The metric label of a plan's outcome.
pub fn outcome_label(plan: &Plan) -> String {
    match plan {
        Plan::Inject { patch, .. } if patch.0.is_empty() => "unchanged".into(),
        Plan::Inject { .. } => "injected".into(),
        Plan::Allow { .. } => "allowed-without-binding".into(),
        Plan::Refuse { reason, .. } => format!("refused-{}", reason.as_str()),
    }
}

/// Where the webhook reads ServiceAccounts: the reflector cache, then one live GET on a miss
/// (a ServiceAccount created just before its pod may not have reached the cache yet).
#[derive(Clone)]
pub struct ServiceAccounts {
    pub cache: Store<ServiceAccount>,
    pub client: Option<Client>,
}

impl ServiceAccounts {
    pub async fn get(&self, namespace: &str, name: &str) -> Option<Arc<ServiceAccount>> {
        if let Some(sa) = self.cache.get(&ObjectRef::new(name).within(namespace)) {
            return Some(sa);
        }
        let client = self.client.clone()?;
        let api: Api<ServiceAccount> = Api::namespaced(client, namespace);
        match tokio::time::timeout(Duration::from_secs(2), api.get_opt(name)).await {
            Ok(Ok(sa)) => sa.map(Arc::new),
            Ok(Err(e)) => {
                tracing::warn!(namespace, name, error = %e, "ServiceAccount lookup failed");
                None
            }
            Err(_) => {
                tracing::warn!(namespace, name, "ServiceAccount lookup timed out");
                None
            }
        }
    }
}

/// Everything the admission handler needs.
pub struct Webhook {
    pub bindings: Store<MlflowWorkspaceBinding>,
    pub service_accounts: ServiceAccounts,
    pub defaults: Defaults,
    pub metrics: Metrics,
    pub events: Option<RefusalEvents>,
}

impl Webhook {
    /// Answers one AdmissionReview body: (HTTP status, JSON or text body).
    pub async fn review(&self, body: &[u8]) -> (StatusCode, Value) {
        let started = Instant::now();
        let (status, answer, outcome) = self.review_inner(body).await;
        self.metrics
            .admission_duration
            .observe(started.elapsed().as_secs_f64());
        self.metrics.admission(&outcome);
        (status, answer)
    }

    async fn review_inner(&self, body: &[u8]) -> (StatusCode, Value, String) {
        let req = match parse_review(body) {
            Ok(r) => r,
            Err((Some(uid), e)) => {
                return (
                    StatusCode::OK,
                    error_response(&uid, &e),
                    format!("error-{}", e.label()),
                );
            }
            Err((None, e)) => {
                return (
                    StatusCode::BAD_REQUEST,
                    json!({"error": format!("mlflow-operator: {e}")}),
                    format!("error-{}", e.label()),
                );
            }
        };
        if req.operation != "CREATE" {
            // Only new pods are mutated; a running pod's env cannot change.
            let plan = Plan::Allow { warnings: vec![] };
            return (
                StatusCode::OK,
                review_response(&req.uid, &plan),
                "skipped-operation".into(),
            );
        }
        let bindings: Vec<Arc<MlflowWorkspaceBinding>> = self
            .bindings
            .state()
            .into_iter()
            .filter(|b| b.metadata.namespace.as_deref() == Some(req.namespace.as_str()))
            .collect();
        let sa_name = req
            .object
            .pointer("/spec/serviceAccountName")
            .and_then(Value::as_str)
            .unwrap_or("default");
        let sa = if needs_service_account(&bindings) {
            self.service_accounts.get(&req.namespace, sa_name).await
        } else {
            None
        };
        let view = NamespaceView {
            namespace: &req.namespace,
            bindings: bindings.iter().map(Arc::as_ref).collect(),
            service_account: sa.as_deref(),
        };
        let plan = inject::plan(&req.object, &view, &self.defaults);
        if let (
            Plan::Refuse {
                reason,
                message,
                binding: Some(binding),
            },
            Some(events),
            false,
        ) = (&plan, &self.events, req.dry_run)
        {
            events.refused(&req.namespace, binding, reason.as_str(), message);
        }
        (
            StatusCode::OK,
            review_response(&req.uid, &plan),
            outcome_label(&plan),
        )
    }
}

fn needs_service_account(bindings: &[Arc<MlflowWorkspaceBinding>]) -> bool {
    bindings.iter().any(|b| {
        b.spec
            .identity
            .as_ref()
            .is_some_and(|i| i.workload_identity.is_some())
    })
}

/// Warning Events on a binding for refused pods, at most one per binding and reason a minute
/// (a Deployment scaled to 100 refused pods makes one Event, not 100 API calls).
pub struct RefusalEvents {
    recorder: Recorder,
    last: Mutex<HashMap<(String, String, String), Instant>>,
    every: Duration,
}

impl RefusalEvents {
    pub fn new(client: Client, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: "mlflow-operator-webhook".into(),
            instance,
        };
        Self {
            recorder: Recorder::new(client, reporter),
            last: Mutex::new(HashMap::new()),
            every: Duration::from_secs(60),
        }
    }

    fn refused(&self, namespace: &str, binding: &str, reason: &str, message: &str) {
        let key = (
            namespace.to_string(),
            binding.to_string(),
            reason.to_string(),
        );
        {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if last
                .get(&key)
                .is_some_and(|t| now.duration_since(*t) < self.every)
            {
                return;
            }
            last.insert(key, now);
        }
        let recorder = self.recorder.clone();
        let mut reference = MlflowWorkspaceBinding::object_ref(&Default::default(), &());
        reference.name = Some(binding.to_string());
        reference.namespace = Some(namespace.to_string());
        let note: String = message.chars().take(1000).collect();
        // Off the admission path: the answer does not wait for the Event.
        tokio::spawn(async move {
            let event = Event {
                type_: EventType::Warning,
                reason: "PodRefused".into(),
                note: Some(note),
                action: "Admit".into(),
                secondary: None,
            };
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::debug!(error = %e, "could not record a refusal Event");
            }
        });
    }
}

async fn handle(
    webhook: Arc<Webhook>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let json_response = |status: StatusCode, body: Value| {
        Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(
                serde_json::to_vec(&body).expect("JSON serializes"),
            )))
            .expect("a valid response")
    };
    if req.uri().path() != "/mutate" {
        return Ok(json_response(
            StatusCode::NOT_FOUND,
            json!({"error": "mlflow-operator: only POST /mutate is served here"}),
        ));
    }
    if req.method() != Method::POST {
        return Ok(json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"error": "mlflow-operator: /mutate takes POST with an AdmissionReview"}),
        ));
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            webhook.metrics.admission("error-too-large");
            let too_large = e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            let (status, msg) = if too_large {
                (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("mlflow-operator: request body over {MAX_BODY} bytes"),
                )
            } else {
                (
                    StatusCode::BAD_REQUEST,
                    format!("mlflow-operator: reading the request body: {e}"),
                )
            };
            return Ok(json_response(status, json!({"error": msg})));
        }
    };
    let (status, answer) = webhook.review(&body).await;
    Ok(json_response(status, answer))
}

/// Serves `/mutate` over TLS (1.2+) with the certificate the store holds at each handshake.
/// Runs until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    webhook: Arc<Webhook>,
    certs: Arc<CertStore>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(certs.server_config()));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let (acceptor, webhook) = (acceptor.clone(), webhook.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let service = hyper::service::service_fn(move |req| handle(webhook.clone(), req));
            if let Err(e) = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

/// The webhook's in-memory views of the cluster, and the watch loops that fill them.
pub struct Caches {
    pub bindings: Store<MlflowWorkspaceBinding>,
    pub service_accounts: Store<ServiceAccount>,
    /// Drive these (spawn them) for the stores to fill and stay current.
    pub drivers: Vec<futures::future::BoxFuture<'static, ()>>,
}

impl Caches {
    pub fn new(client: &Client) -> Self {
        use futures::{FutureExt, StreamExt};
        use kube::runtime::{WatchStreamExt, reflector, watcher};
        let (bindings, bindings_writer) = reflector::store::<MlflowWorkspaceBinding>();
        let (service_accounts, sas_writer) = reflector::store::<ServiceAccount>();
        let b_stream = watcher(
            Api::<MlflowWorkspaceBinding>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .reflect(bindings_writer)
        .applied_objects();
        // Only names and annotations of ServiceAccounts matter; drop the rest from memory.
        let sa_stream = watcher(
            Api::<ServiceAccount>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(|sa| {
            kube::ResourceExt::managed_fields_mut(sa).clear();
            sa.secrets = None;
            sa.image_pull_secrets = None;
        })
        .reflect(sas_writer)
        .applied_objects();
        let drivers = vec![
            b_stream.for_each(|_| async {}).boxed(),
            sa_stream.for_each(|_| async {}).boxed(),
        ];
        Self {
            bindings,
            service_accounts,
            drivers,
        }
    }

    /// Resolves once both stores hold a full initial list.
    pub fn synced(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (b, s) = (self.bindings.clone(), self.service_accounts.clone());
        async move {
            let _ = b.wait_until_ready().await;
            let _ = s.wait_until_ready().await;
        }
    }
}

/// Binds the webhook listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review(object: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u1",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "team-a",
                "operation": "CREATE",
                "object": object,
                "dryRun": true
            }
        }))
        .unwrap()
    }

    #[test]
    fn parses_a_pod_review() {
        let r = parse_review(&review(json!({"metadata": {}, "spec": {"containers": []}}))).unwrap();
        assert_eq!(r.uid, "u1");
        assert_eq!(r.namespace, "team-a");
        assert_eq!(r.operation, "CREATE");
        assert!(r.dry_run);
    }

    #[test]
    fn rejects_what_it_cannot_review_with_a_reason() {
        let wrong_kind = {
            let mut v: Value = serde_json::from_slice(&review(json!({}))).unwrap();
            v["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
            serde_json::to_vec(&v).unwrap()
        };
        let v1beta1 = {
            let mut v: Value = serde_json::from_slice(&review(json!({}))).unwrap();
            v["apiVersion"] = json!("admission.k8s.io/v1beta1");
            serde_json::to_vec(&v).unwrap()
        };
        let no_uid = {
            let mut v: Value = serde_json::from_slice(&review(json!({}))).unwrap();
            v["request"].as_object_mut().unwrap().remove("uid");
            serde_json::to_vec(&v).unwrap()
        };
        let cases: Vec<(&str, Vec<u8>, Option<&str>, &str)> = vec![
            ("not json", b"{nope".to_vec(), None, "not JSON"),
            ("empty", Vec::new(), None, "not JSON"),
            ("array", b"[]".to_vec(), None, "AdmissionReview"),
            ("v1beta1", v1beta1, Some("u1"), "admissionReviewVersions"),
            ("no uid", no_uid, None, "uid"),
            ("deployment", wrong_kind, Some("u1"), "apps/v1/Deployment"),
        ];
        for (name, body, uid, msg) in cases {
            let (got_uid, err) = parse_review(&body).unwrap_err();
            assert_eq!(got_uid.as_deref(), uid, "{name}");
            assert!(err.to_string().contains(msg), "{name}: {err}");
        }
    }

    #[test]
    fn responses_carry_patch_warnings_or_refusal() {
        let patch: json_patch::Patch = serde_json::from_value(
            json!([{"op": "add", "path": "/metadata/annotations", "value": {}}]),
        )
        .unwrap();
        let r = review_response(
            "u",
            &Plan::Inject {
                binding: "b".into(),
                patch,
                warnings: vec!["w".into()],
            },
        );
        assert_eq!(r["response"]["allowed"], true);
        assert_eq!(r["response"]["patchType"], "JSONPatch");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(r["response"]["patch"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&raw).unwrap()[0]["op"],
            "add"
        );
        assert_eq!(r["response"]["warnings"], json!(["w"]));

        let empty = review_response(
            "u",
            &Plan::Inject {
                binding: "b".into(),
                patch: json_patch::Patch(vec![]),
                warnings: vec![],
            },
        );
        assert!(
            empty["response"].get("patch").is_none(),
            "an empty patch is no patch"
        );

        let refused = review_response(
            "u",
            &Plan::Refuse {
                reason: inject::RefusalReason::NoBinding,
                message: "m".into(),
                binding: None,
            },
        );
        assert_eq!(refused["response"]["allowed"], false);
        assert_eq!(refused["response"]["status"]["code"], 403);
        assert_eq!(refused["response"]["status"]["message"], "m");
    }
}
