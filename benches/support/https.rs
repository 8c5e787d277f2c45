//! One AdmissionReview over a fresh HTTPS connection, as the API server would send it.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};

/// The review of a labelled pod in `namespace` that names `binding`.
pub fn review(namespace: &str, binding: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "5c3a8e0e-0d6f-4b53-9d43-3f1b9d2b7a11",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace, "operation": "CREATE",
            "object": {
                "metadata": {"generateName": "train-", "namespace": namespace,
                             "labels": {"mlflow-operator.io/track": "true"},
                             "annotations": {"mlflow-operator.io/binding": binding}},
                "spec": {"containers": [{"name": "train", "image": "busybox"}]}
            },
            "dryRun": false
        }
    }))
    .unwrap()
}

/// Whether the webhook on `port` answers `body` with a patch (false while it cannot be
/// reached, or answers without one).
pub async fn patched(port: u16, ca_pem: &str, body: &[u8]) -> bool {
    post(port, ca_pem, body)
        .await
        .is_some_and(|answer| answer["response"]["patch"].is_string())
}

async fn post(port: u16, ca_pem: &str, body: &[u8]) -> Option<Value> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).ok()?)
        .ok()?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let name = ServerName::try_from("127.0.0.1").ok()?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .ok()?;
    tokio::spawn(conn);
    let req = http::Request::post("/mutate")
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::copy_from_slice(body)))
        .ok()?;
    let resp = sender.send_request(req).await.ok()?;
    let bytes = resp.into_body().collect().await.ok()?.to_bytes();
    serde_json::from_slice(&bytes).ok()
}
