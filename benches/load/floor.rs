//! The floor: the least an HTTPS webhook on this stack can do. The same rustls and hyper as
//! ours, as many tokio workers, reading each request body and answering one fixed
//! AdmissionReview (with a fixed patch) without parsing anything. It runs as its own process
//! (the benchmark binary started with `serve-floor`), so its CPU and memory are its own.

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mlflow_operator::certs::CertStore;

/// base64 of `[{"op":"add","path":"/spec/containers/0/env/-","value":{"name":"MLFLOW_TRACKING_URI","value":"http://mlflow.bench.svc:5000"}}]`.
const ANSWER: &[u8] = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"705ab4f5-6393-11e8-b7cc-42010a800002","allowed":true,"patchType":"JSONPatch","patch":"W3sib3AiOiJhZGQiLCJwYXRoIjoiL3NwZWMvY29udGFpbmVycy8wL2Vudi8tIiwidmFsdWUiOnsibmFtZSI6Ik1MRkxPV19UUkFDS0lOR19VUkkiLCJ2YWx1ZSI6Imh0dHA6Ly9tbGZsb3cuYmVuY2guc3ZjOjUwMDAifX1d"}}"#;

/// Serves the fixed answer on 127.0.0.1:`port` with `dir`/tls.crt and `dir`/tls.key, forever.
pub fn serve(port: u16, dir: &Path) -> anyhow::Result<()> {
    let store = CertStore::new();
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    store
        .set_pem(&std::fs::read(&cert)?, &std::fs::read(&key)?)
        .with_context(|| format!("loading {}", cert.display()))?;
    // As #[tokio::main] in ours: one worker per core.
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(store.server_config()));
        loop {
            let (stream, _) = listener.accept().await?;
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let _ = req.into_body().collect().await;
                        let answer = http::Response::builder()
                            .header(http::header::CONTENT_TYPE, "application/json")
                            .body(Full::new(Bytes::from_static(ANSWER)))
                            .expect("a valid response");
                        Ok::<_, Infallible>(answer)
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    })
}
