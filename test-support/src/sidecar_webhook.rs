//! A second mutating webhook, as a service mesh or log shipper would install: it appends a
//! sidecar container to every labelled pod. Used to prove reinvocation works.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::eventually;

pub struct SidecarWebhook {
    name: String,
    task: tokio::task::JoinHandle<()>,
}

fn answer(review: &Value) -> Value {
    let uid = review["request"]["uid"].clone();
    let has = review["request"]["object"]["spec"]["containers"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["name"] == "added-sidecar"));
    let mut resp = json!({"uid": uid, "allowed": true});
    if !has {
        let patch = json!([{"op": "add", "path": "/spec/containers/-", "value": {"name": "added-sidecar", "image": "busybox"}}]);
        resp["patchType"] = json!("JSONPatch");
        resp["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(patch.to_string()));
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": resp})
}

impl SidecarWebhook {
    pub async fn start(client: &Client, ns: &str) -> Self {
        let (store, pems) = crate::webhook::serving_certificate(&["127.0.0.1"]);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(store.server_config()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(
                        |req: http::Request<hyper::body::Incoming>| async move {
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let review: Value =
                                serde_json::from_slice(&body).unwrap_or(Value::Null);
                            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                Bytes::from(answer(&review).to_string()),
                            )))
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        // Sorts after ours, so the API server calls it second and then reinvokes ours.
        let name = format!("zz-sidecar-{ns}");
        let mut mwc = crate::webhook::webhook_configuration(
            &name,
            &format!("https://127.0.0.1:{port}/mutate"),
            Some(&pems.ca_cert),
            ns,
        )
        .await;
        mwc["webhooks"][0]["name"] = json!("sidecar.example.com");
        mwc["webhooks"][0]["reinvocationPolicy"] = json!("Never");
        crate::webhook::register(client, &mwc).await;
        Self { name, task }
    }

    /// Waits until a dry-run pod comes back with the sidecar.
    pub async fn wait_effective(&self, client: &Client, ns: &str) {
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        eventually(
            "the sidecar webhook in the admission chain",
            Duration::from_secs(30),
            || async {
                let p = pods
                    .create(
                        &PostParams {
                            dry_run: true,
                            ..Default::default()
                        },
                        &crate::webhook::probe_pod(),
                    )
                    .await
                    .ok()?;
                p.spec?
                    .containers
                    .iter()
                    .any(|c| c.name == "added-sidecar")
                    .then_some(())
            },
        )
        .await;
    }

    pub async fn stop(self, client: &Client) {
        let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
        let _ = api.delete(&self.name, &DeleteParams::default()).await;
        self.task.abort();
    }
}
