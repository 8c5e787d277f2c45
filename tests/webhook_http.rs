//! The webhook's HTTPS surface, without a cluster: bad requests get clear errors and never a
//! panic, and certificates swapped the way Kubernetes updates Secret volumes are served to new
//! connections.

use mlflow_operator_test_support as common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use mlflow_operator::certs::{self, CertStore, Pems};
use mlflow_operator::inject::Defaults;
use mlflow_operator::metrics::Metrics;
use mlflow_operator::webhook::{self, Webhook};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};

struct Server {
    port: u16,
    metrics: Metrics,
    _stop: tokio::sync::oneshot::Sender<()>,
    _writers: Box<dyn std::any::Any + Send>,
}

fn pems(name: &str) -> Pems {
    certs::generate(
        &[name.to_string(), "127.0.0.1".into()],
        30,
        10,
        jiff::Timestamp::now().as_second(),
    )
    .unwrap()
}

async fn serve(store: Arc<CertStore>) -> Server {
    // Empty caches: these requests never get as far as choosing a binding.
    let bindings = mlflow_operator::webhook::BindingIndex::from_objects([]);
    let (sas, w2) = kube::runtime::reflector::store();
    let wh = Arc::new(Webhook::cached(bindings, sas, Defaults::default()));
    let metrics = wh.metrics.clone();
    let listener = webhook::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(webhook::serve(listener, wh, store, async move {
        let _ = rx.await;
    }));
    Server {
        port,
        metrics,
        _stop: tx,
        _writers: Box::new(w2),
    }
}

fn client_config(
    ca_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// One HTTPS request over a fresh connection; returns the status, the body and the server's
/// leaf certificate.
async fn request(
    port: u16,
    ca_pem: &str,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> (u16, Vec<u8>, Vec<u8>) {
    request_with(
        port,
        client_config(ca_pem, &[&rustls::version::TLS13, &rustls::version::TLS12]),
        method,
        path,
        body,
    )
    .await
}

async fn request_with(
    port: u16,
    cfg: rustls::ClientConfig,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> (u16, Vec<u8>, Vec<u8>) {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .expect("TLS handshake");
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, body, leaf)
}

fn review(kind: Value, operation: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u-1", "kind": kind, "namespace": "ns", "operation": operation,
                    "object": {"metadata": {}, "spec": {"containers": []}}}
    }))
    .unwrap()
}

#[tokio::test]
async fn rejects_malformed_oversized_wrong_kind_and_wrong_route_requests_clearly() {
    let p = pems("localhost");
    let store = CertStore::new();
    store.set_pem(p.cert.as_bytes(), p.key.as_bytes()).unwrap();
    let s = serve(store).await;

    let (status, body, _) =
        request(s.port, &p.ca_cert, "POST", "/mutate", b"{not json".to_vec()).await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("not JSON"));

    let (status, body, _) = request(
        s.port,
        &p.ca_cert,
        "POST",
        "/mutate",
        br#"{"kind":"Pod"}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("AdmissionReview"));

    let deployment = review(
        json!({"group": "apps", "version": "v1", "kind": "Deployment"}),
        "CREATE",
    );
    let (status, body, _) = request(s.port, &p.ca_cert, "POST", "/mutate", deployment).await;
    assert_eq!(
        status, 200,
        "an AdmissionReview answer, so the API server shows the message"
    );
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["response"]["uid"], "u-1");
    assert_eq!(v["response"]["allowed"], false);
    assert!(
        v["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("pods only")
    );

    let big = vec![b' '; webhook::MAX_BODY + 1];
    let (status, _, _) = request(s.port, &p.ca_cert, "POST", "/mutate", big).await;
    assert_eq!(status, 413);

    let (status, _, _) = request(s.port, &p.ca_cert, "GET", "/mutate", vec![]).await;
    assert_eq!(status, 405);
    let (status, _, _) = request(s.port, &p.ca_cert, "POST", "/validate", vec![]).await;
    assert_eq!(status, 404);

    // Only new pods are mutated: other operations are allowed untouched.
    let update = review(
        json!({"group": "", "version": "v1", "kind": "Pod"}),
        "UPDATE",
    );
    let (status, body, _) = request(s.port, &p.ca_cert, "POST", "/mutate", update).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["response"]["allowed"], true);
    assert!(v["response"].get("patch").is_none());

    let text = s.metrics.render();
    assert!(
        text.contains(r#"mlflow_operator_admissions_total{outcome="error-malformed"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"mlflow_operator_admissions_total{outcome="error-wrong-kind"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"mlflow_operator_admissions_total{outcome="error-too-large"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn serves_tls_1_2_and_1_3() {
    let p = pems("localhost");
    let store = CertStore::new();
    store.set_pem(p.cert.as_bytes(), p.key.as_bytes()).unwrap();
    let s = serve(store).await;
    for v in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let (status, _, _) = request_with(
            s.port,
            client_config(&p.ca_cert, &[v]),
            "GET",
            "/mutate",
            vec![],
        )
        .await;
        assert_eq!(status, 405, "{v:?}");
    }
}

/// Lays out files as the kubelet does for a Secret volume: `tls.crt -> ..data/tls.crt`,
/// `..data -> ..<timestamp>/`, and an update swaps `..data` atomically.
fn write_secret_volume(dir: &Path, version: &str, p: &Pems) {
    let ts = dir.join(format!("..{version}"));
    std::fs::create_dir_all(&ts).unwrap();
    std::fs::write(ts.join("tls.crt"), &p.cert).unwrap();
    std::fs::write(ts.join("tls.key"), &p.key).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for f in ["tls.crt", "tls.key"] {
        if !dir.join(f).exists() {
            std::os::unix::fs::symlink(format!("..data/{f}"), dir.join(f)).unwrap();
        }
    }
}

#[tokio::test]
async fn a_secret_volume_update_is_served_to_new_connections_and_readiness_waits_for_a_certificate()
{
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let store = CertStore::new();
    assert!(!store.is_loaded());
    assert!(
        certs::load_files(&store, &cert, &key).await.is_err(),
        "no files yet: nothing to serve"
    );
    let health = mlflow_operator::run::Health {
        certs: Some(store.clone()),
        caches_synced: Arc::new(true.into()),
        webhook: true,
        ..Default::default()
    };
    assert!(health.ready().is_err(), "not ready without a certificate");

    let first = pems("localhost");
    write_secret_volume(dir.path(), "2026_01_01", &first);
    tokio::spawn(certs::watch_files(
        store.clone(),
        cert.clone(),
        key.clone(),
        Duration::from_millis(50),
    ));
    let s = serve(store.clone()).await;
    let loaded = || std::future::ready(store.is_loaded().then_some(()));
    common::eventually("the certificate to load", Duration::from_secs(10), loaded).await;
    assert!(health.ready().is_ok());
    let (_, _, leaf1) = request(s.port, &first.ca_cert, "GET", "/mutate", vec![]).await;
    assert_eq!(
        leaf1,
        CertificateDer::from_pem_slice(first.cert.as_bytes())
            .unwrap()
            .to_vec()
    );

    // A new CA and certificate arrive by symlink swap; new connections get them.
    let second = pems("localhost");
    write_secret_volume(dir.path(), "2026_02_01", &second);
    let want = CertificateDer::from_pem_slice(second.cert.as_bytes())
        .unwrap()
        .to_vec();
    common::eventually(
        "the swapped certificate to be served",
        Duration::from_secs(10),
        || async {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", s.port))
                .await
                .unwrap();
            let cfg = client_config(&second.ca_cert, &[&rustls::version::TLS13]);
            let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
                .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
                .await
                .ok()?;
            let served = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
            (served == want).then_some(())
        },
    )
    .await;
}
