//! The HTTPS side: the TLS accept loop (certificate chosen per handshake from the store) and
//! the one route, `POST /mutate`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::Webhook;
use crate::certs::CertStore;

/// The API server caps request bodies at 3 MiB; anything much larger is not from it.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// What one client may hold of the server, and for how long. The API server answers in
/// milliseconds and gives up after the webhook's timeoutSeconds (at most 30 s); a client slower
/// than these bounds is not the API server, and must not starve it.
#[derive(Clone, Debug)]
pub struct Limits {
    /// TLS handshake.
    pub handshake: Duration,
    /// HTTP/1 request headers, also the idle time between keep-alive requests. Longer than the
    /// API server's 90 s idle timeout for pooled connections: the client closes an idle one
    /// first, never the server under a request the client is about to send.
    pub header_read: Duration,
    /// The request body, once the headers are in.
    pub body_read: Duration,
    /// A whole request, from headers to the answer being ready.
    pub request: Duration,
    /// Open connections; past it new ones are closed at once.
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams per connection.
    pub h2_max_streams: u32,
    /// At shutdown, how long connections may go on: each request still gets its answer, with
    /// `Connection: close`, so the API server opens its next connection to another replica.
    pub drain: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake: Duration::from_secs(10),
            header_read: Duration::from_secs(120),
            body_read: Duration::from_secs(10),
            request: Duration::from_secs(30),
            max_connections: 1024,
            h2_max_streams: 128,
            drain: Duration::from_secs(3),
        }
    }
}

/// Binds the webhook listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `/mutate` over TLS (1.2+) with the certificate the store holds at each handshake,
/// within the default [`Limits`]. Runs until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    webhook: Arc<Webhook>,
    certs: Arc<CertStore>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    serve_with(listener, webhook, certs, Limits::default(), shutdown).await
}

/// [`serve`] within `limits`. At shutdown it stops accepting and drains: for `limits.drain`
/// every answer closes its HTTP/1 connection after it (the API server speaks HTTP/1.1 to
/// webhooks, and a pooled connection closed under it while idle may fail a request), then what
/// is still open is told to finish (HTTP/2 GOAWAY, idle HTTP/1 closed) and given one second.
pub async fn serve_with(
    listener: TcpListener,
    webhook: Arc<Webhook>,
    certs: Arc<CertStore>,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(certs.server_config()));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let limits = Arc::new(limits);
    let draining = Arc::new(AtomicBool::new(false));
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
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            webhook.metrics.admission("error-too-many-connections");
            tracing::debug!(%peer, "connection limit reached: closed");
            continue;
        };
        let conn = Conn {
            acceptor: acceptor.clone(),
            webhook: webhook.clone(),
            limits: limits.clone(),
            watcher: graceful.watcher(),
            draining: draining.clone(),
        };
        tokio::spawn(async move {
            conn.serve(stream, peer).await;
            drop(slot);
        });
    }
    drop(listener);
    draining.store(true, Ordering::Relaxed);
    // Every connection holds a slot: all slots free means every connection has closed.
    let all_closed = slots.acquire_many(limits.max_connections as u32);
    if tokio::time::timeout(limits.drain, all_closed)
        .await
        .is_err()
    {
        tracing::info!(
            open = graceful.count(),
            "drain period over: closing the remaining connections"
        );
    }
    if tokio::time::timeout(Duration::from_secs(1), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain: cut");
    }
}

/// One accepted connection and what it needs.
struct Conn {
    acceptor: tokio_rustls::TlsAcceptor,
    webhook: Arc<Webhook>,
    limits: Arc<Limits>,
    watcher: Watcher,
    draining: Arc<AtomicBool>,
}

impl Conn {
    async fn serve(self, stream: tokio::net::TcpStream, peer: SocketAddr) {
        let accept = self.acceptor.accept(stream);
        let tls = match tokio::time::timeout(self.limits.handshake, accept).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => return,
        };
        let (webhook, limits, draining) = (self.webhook, self.limits.clone(), self.draining);
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let (webhook, limits, draining) = (webhook.clone(), limits.clone(), draining.clone());
            async move {
                let http1 = req.version() <= http::Version::HTTP_11;
                let answer = tokio::time::timeout(limits.request, handle(webhook, &limits, req));
                let mut response = answer.await.unwrap_or_else(|_| {
                    error(StatusCode::SERVICE_UNAVAILABLE, "the request took too long")
                });
                if http1 && draining.load(Ordering::Relaxed) {
                    response.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("close"),
                    );
                }
                Ok::<_, Infallible>(response)
            }
        });
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read)
            .max_buf_size(64 * 1024);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(self.limits.h2_max_streams)
            .max_header_list_size(64 * 1024)
            .keep_alive_interval(Some(self.limits.header_read))
            .keep_alive_timeout(self.limits.handshake);
        let conn = builder.serve_connection(TokioIo::new(tls), service);
        if let Err(e) = self.watcher.watch(conn.into_owned()).await {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(
            serde_json::to_vec(body).expect("JSON serializes"),
        )))
        .expect("a valid response")
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json_response(
        status,
        &json!({"error": format!("mlflow-operator: {message}")}),
    )
}

async fn handle(
    webhook: Arc<Webhook>,
    limits: &Limits,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if req.uri().path() != "/mutate" {
        return error(StatusCode::NOT_FOUND, "only POST /mutate is served here");
    }
    if req.method() != Method::POST {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "/mutate takes POST with an AdmissionReview",
        );
    }
    let body = Limited::new(req.into_body(), MAX_BODY).collect();
    let body = match tokio::time::timeout(limits.body_read, body).await {
        Ok(Ok(b)) => b.to_bytes(),
        Err(_) => {
            webhook.metrics.admission("error-body-timeout");
            let message = format!(
                "the request body did not arrive within {:?}",
                limits.body_read
            );
            return error(StatusCode::REQUEST_TIMEOUT, &message);
        }
        Ok(Err(e)) => {
            webhook.metrics.admission("error-too-large");
            let too_large = e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            return if too_large {
                let message = format!("request body over {MAX_BODY} bytes");
                error(StatusCode::PAYLOAD_TOO_LARGE, &message)
            } else {
                let message = format!("reading the request body: {e}");
                error(StatusCode::BAD_REQUEST, &message)
            };
        }
    };
    let answer = webhook.review(&body).await;
    json_response(answer.status, &answer.body)
}
