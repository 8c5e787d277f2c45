//! The floor: the least an HTTPS webhook on this stack can do. The same rustls and hyper as
//! ours, as many tokio workers, reading each request body and answering with one fixed patch,
//! parsing nothing: it only copies the request's uid into the answer, which the API server
//! checks. It runs as its own process (the benchmark binary started with `serve-floor`), so its
//! CPU and memory are its own: on loopback for `benches/load`, in pods behind a Service for
//! `benches/apiserver`.
//!
//! With `--read`, it is the floor that reads: it also takes the whole body into one buffer and
//! validates it as JSON with serde_json's skip, building nothing (no SIMD reader skips faster on
//! these payloads: `benches/readers.rs`). A webhook that looks at the pod cannot do much less,
//! so its CPU per admission against the floor's is about the least any such webhook can reach.
//!
//! Given its patches by the body's length (`LEN:PATCH_BASE64`, one per payload), the reading
//! floor answers each review with the patch ours answers it with: the least a webhook that
//! reads the pod and sends that patch pays (`benches/load`'s answering floor). The lookup by
//! length costs nothing beside the reading, and the load bench's payloads differ in length.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mlflow_operator::certs::CertStore;

/// base64 of `[{"op":"add","path":"/spec/containers/0/env/-","value":{"name":"MLFLOW_TRACKING_URI","value":"http://mlflow.bench.svc:5000"}}]`.
pub const LOOPBACK_PATCH: &str = "W3sib3AiOiJhZGQiLCJwYXRoIjoiL3NwZWMvY29udGFpbmVycy8wL2Vudi8tIiwidmFsdWUiOnsibmFtZSI6Ik1MRkxPV19UUkFDS0lOR19VUkkiLCJ2YWx1ZSI6Imh0dHA6Ly9tbGZsb3cuYmVuY2guc3ZjOjUwMDAifX1d";

const UID_KEY: &[u8] = br#""uid":""#;

const USAGE: &str =
    "usage: serve-floor [--read] ADDR:PORT CERT_DIR [PATCH_BASE64 | LEN:PATCH_BASE64...]";

/// `serve-floor [--read] ADDR CERT_DIR [PATCH_BASE64 | LEN:PATCH_BASE64...]` as a process's
/// arguments (after the subcommand).
pub fn main(args: &[String]) -> ExitCode {
    let read = args.first().is_some_and(|a| a == "--read");
    let args = &args[usize::from(read)..];
    let (Some(addr), Some(dir)) = (args.first().and_then(|a| a.parse().ok()), args.get(1)) else {
        eprintln!("{USAGE}");
        return ExitCode::FAILURE;
    };
    let Some(patches) = Patches::parse(&args[2..]) else {
        eprintln!("{USAGE}");
        return ExitCode::FAILURE;
    };
    match serve(addr, dir.as_ref(), patches, read) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("floor server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The patch the floor answers with: one for every review, or one by the body's length.
#[derive(Debug, PartialEq)]
pub struct Patches {
    fixed: String,
    by_length: Vec<(usize, String)>,
}

impl Patches {
    /// One patch, for every review.
    pub fn fixed(patch: &str) -> Self {
        Self {
            fixed: patch.into(),
            by_length: Vec::new(),
        }
    }

    /// No argument: [`LOOPBACK_PATCH`]; one without a length: that patch; else every one
    /// `LEN:PATCH` (base64 holds no colon). None when an argument says neither.
    pub fn parse(args: &[String]) -> Option<Self> {
        match args {
            [] => Some(Self::fixed(LOOPBACK_PATCH)),
            [patch] if !patch.contains(':') => Some(Self::fixed(patch)),
            _ => {
                let by_length = args
                    .iter()
                    .map(|a| {
                        let (len, patch) = a.split_once(':')?;
                        Some((len.parse().ok()?, patch.to_string()))
                    })
                    .collect::<Option<Vec<_>>>()?;
                let fixed = by_length.first()?.1.clone();
                Some(Self { fixed, by_length })
            }
        }
    }

    /// The patch for a body of `len` bytes.
    pub fn of(&self, len: usize) -> &str {
        let found = self.by_length.iter().find(|(l, _)| *l == len);
        found.map_or(&self.fixed, |(_, p)| p)
    }
}

/// The answer to a review whose body is `body`: allowed, with `patch` (base64).
pub fn answer(body: &[u8], patch: &str) -> Vec<u8> {
    // The request's uid is its first: the API server encodes AdmissionRequest in field order.
    let uid = body
        .windows(UID_KEY.len())
        .position(|w| w == UID_KEY)
        .map(|at| &body[at + UID_KEY.len()..])
        .and_then(|rest| rest.split(|b| *b == b'"').next())
        .unwrap_or_default();
    let mut out = Vec::with_capacity(160 + uid.len() + patch.len());
    out.extend_from_slice(
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":""#,
    );
    out.extend_from_slice(uid);
    out.extend_from_slice(br#"","allowed":true,"patchType":"JSONPatch","patch":""#);
    out.extend_from_slice(patch.as_bytes());
    out.extend_from_slice(br#""}}"#);
    out
}

/// Serves on `addr` with `dir`/tls.crt and `dir`/tls.key, forever; with `read`, reading each
/// request body whole.
pub fn serve(addr: SocketAddr, dir: &Path, patches: Patches, read: bool) -> anyhow::Result<()> {
    let store = CertStore::new();
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    store
        .set_pem(&std::fs::read(&cert)?, &std::fs::read(&key)?)
        .with_context(|| format!("loading {}", cert.display()))?;
    let patches = Arc::new(patches);
    // As #[tokio::main] in ours: one worker per core.
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(store.server_config()));
        loop {
            let (stream, _) = listener.accept().await?;
            let (acceptor, patches) = (acceptor.clone(), patches.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let patches = patches.clone();
                        async move {
                            let head = match read {
                                true => read_whole(req.into_body()).await,
                                false => first_chunk(req.into_body()).await,
                            };
                            let answer = http::Response::builder()
                                .header(http::header::CONTENT_TYPE, "application/json")
                                .body(Full::new(Bytes::from(answer(
                                    &head,
                                    patches.of(head.len()),
                                ))))
                                .expect("a valid response");
                            Ok::<_, Infallible>(answer)
                        }
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    })
}

/// Reads the whole body and keeps its first data frame (where the uid is), copying nothing.
async fn first_chunk(mut body: hyper::body::Incoming) -> Bytes {
    let mut head = None;
    while let Some(Ok(frame)) = body.frame().await {
        if let (None, Ok(data)) = (&head, frame.into_data()) {
            head = Some(data);
        }
    }
    head.unwrap_or_default()
}

/// Reads the whole body into one buffer, as a webhook that parses it must, and validates it as
/// JSON, building nothing.
async fn read_whole(body: hyper::body::Incoming) -> Bytes {
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let valid = serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok();
    std::hint::black_box(valid);
    body
}
