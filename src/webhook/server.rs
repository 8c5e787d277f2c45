//! The HTTPS side: the TLS accept loop (certificate chosen per handshake from the store) and
//! the one route, `POST /mutate`.

mod connections;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use self::connections::{Activity, Admitted, Connections, Ticket};
use super::Webhook;
use super::answer::{Answer, Outcome, error_body};
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
    /// Open connections; past it a new one takes the place of an idle one (see
    /// `connections`), or is closed at once when every connection is busy.
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
/// is still open is told to finish (hyper's graceful shutdown: HTTP/2 GOAWAY, idle HTTP/1
/// closed) and given one second.
pub async fn serve_with(
    listener: TcpListener,
    webhook: Arc<Webhook>,
    certs: Arc<CertStore>,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(certs.server_config()));
    let connections = Connections::new(limits.max_connections);
    let mut tasks = JoinSet::new();
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
        while tasks.try_join_next().is_some() {}
        let ticket = match connections.admit() {
            Admitted::Room(t) => t,
            Admitted::Evicted(t) => {
                webhook.metrics.connections_evicted.inc();
                tracing::debug!(%peer, "connection limit reached: an idle connection closed for it");
                t
            }
            Admitted::Full => {
                webhook.metrics.admission(Outcome::TooManyConnections);
                tracing::debug!(%peer, "connection limit reached, every connection busy: closed");
                continue;
            }
        };
        let conn = Conn {
            acceptor: acceptor.clone(),
            webhook: webhook.clone(),
            limits: limits.clone(),
            draining: draining.clone(),
            ticket,
        };
        tasks.spawn(conn.serve(stream, peer));
    }
    drop(listener);
    draining.store(true, Ordering::Relaxed);
    drain(tasks, &connections, &limits).await;
}

/// Waits for the connections to close by themselves for the drain period, then tells the rest
/// to finish and gives them a second; what is left after that is cut when `tasks` drops.
async fn drain(mut tasks: JoinSet<()>, connections: &Connections, limits: &Limits) {
    let mut all_closed = async || while tasks.join_next().await.is_some() {};
    if tokio::time::timeout(limits.drain, all_closed())
        .await
        .is_ok()
    {
        return;
    }
    tracing::info!(
        open = connections.count(),
        "drain period over: closing the remaining connections"
    );
    connections.close_all();
    if tokio::time::timeout(Duration::from_secs(1), all_closed())
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
    draining: Arc<AtomicBool>,
    /// Its place among the open connections, given up when the connection ends.
    ticket: Ticket,
}

impl Conn {
    /// Serves the connection until the client closes it, a deadline passes, or it is told to
    /// close (evicted, or shutdown): then hyper finishes what is in progress and closes.
    async fn serve(self, stream: tokio::net::TcpStream, peer: SocketAddr) {
        let close = self.ticket.close.clone();
        let accept = tokio::time::timeout(self.limits.handshake, self.acceptor.accept(stream));
        let tls = tokio::select! {
            accepted = accept => match accepted {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            },
            _ = close.notified() => return,
        };
        let service = service(
            self.webhook,
            self.limits.clone(),
            self.draining,
            self.ticket.activity(),
        );
        let builder = builder(&self.limits);
        let conn = builder.serve_connection(TokioIo::new(tls), service);
        tokio::pin!(conn);
        // hyper-util's GracefulShutdown tells every connection at once and cannot be aimed at
        // one (its connection trait is sealed), and eviction needs exactly that: so each
        // connection waits on its own signal and then asks hyper itself to finish gracefully.
        let ended = tokio::select! {
            ended = conn.as_mut() => ended,
            _ = close.notified() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = ended {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    }
}

/// HTTP/1 and HTTP/2 within `limits`.
fn builder(limits: &Limits) -> hyper_util::server::conn::auto::Builder<TokioExecutor> {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_streams)
        .max_header_list_size(64 * 1024)
        .keep_alive_interval(Some(limits.header_read))
        .keep_alive_timeout(limits.handshake);
    builder
}

/// Answers each request within the request deadline, marking the connection busy meanwhile;
/// while draining, HTTP/1 answers say `Connection: close`.
fn service(
    webhook: Arc<Webhook>,
    limits: Arc<Limits>,
    draining: Arc<AtomicBool>,
    activity: Activity,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static,
> + Clone {
    hyper::service::service_fn(move |req: Request<Incoming>| {
        let (webhook, limits, draining) = (webhook.clone(), limits.clone(), draining.clone());
        let busy = activity.busy();
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
            drop(busy);
            Ok::<_, Infallible>(response)
        }
    })
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(&error_body(message)).expect("JSON serializes");
    json_response(status, body)
}

/// The answer to a request whose body could not be read within `limits`: too large is one
/// outcome, a body that stopped coming another, and any other failure (the client went away,
/// broken framing) a third, so a dashboard of too-large bodies shows only those.
fn unread_body(
    error: Result<&(dyn std::error::Error + 'static), tokio::time::error::Elapsed>,
    limits: &Limits,
) -> Answer {
    match error {
        Err(_) => {
            let message = format!(
                "the request body did not arrive within {:?}",
                limits.body_read
            );
            Answer::error(StatusCode::REQUEST_TIMEOUT, Outcome::BodyTimeout, &message)
        }
        Ok(e) if e.is::<http_body_util::LengthLimitError>() => {
            let message = format!("request body over {MAX_BODY} bytes");
            Answer::error(StatusCode::PAYLOAD_TOO_LARGE, Outcome::TooLarge, &message)
        }
        Ok(e) => {
            let message = format!("reading the request body: {e}");
            Answer::error(StatusCode::BAD_REQUEST, Outcome::BodyRead, &message)
        }
    }
}

async fn handle(
    webhook: Arc<Webhook>,
    limits: &Limits,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let probe = req.uri().path() == crate::certs::probe::PATH;
    if req.uri().path() != "/mutate" && !probe {
        return error(StatusCode::NOT_FOUND, "only POST /mutate is served here");
    }
    if req.method() != Method::POST {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "/mutate takes POST with an AdmissionReview",
        );
    }
    let body = Limited::new(req.into_body(), MAX_BODY).collect();
    let failed = match tokio::time::timeout(limits.body_read, body).await {
        Ok(Ok(b)) if probe => {
            let answer = crate::certs::probe::answer(&b.to_bytes());
            return json_response(StatusCode::OK, answer);
        }
        Ok(Ok(b)) => {
            let answer = webhook.review(&b.to_bytes()).await;
            return json_response(answer.status, answer.body);
        }
        Ok(Err(e)) => unread_body(Ok(&*e), limits),
        Err(elapsed) => unread_body(Err(elapsed), limits),
    };
    webhook.metrics.admission(failed.outcome);
    json_response(failed.status, failed.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only a body over the limit counts as too large; it used to be every failure.
    #[tokio::test]
    async fn body_failures_each_have_their_outcome() {
        let limits = Limits::default();
        let over = Limited::new(Full::new(Bytes::from(vec![b'x'; MAX_BODY + 1])), MAX_BODY);
        let e = over.collect().await.expect_err("over the limit");
        let a = unread_body(Ok(&*e), &limits);
        assert_eq!(
            (a.status, a.outcome),
            (StatusCode::PAYLOAD_TOO_LARGE, Outcome::TooLarge)
        );
        let broken = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let a = unread_body(Ok(&broken), &limits);
        assert_eq!(
            (a.status, a.outcome),
            (StatusCode::BAD_REQUEST, Outcome::BodyRead)
        );
        let body: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("reset by peer"),
            "{body}"
        );
        let never = std::future::pending::<()>();
        let elapsed = tokio::time::timeout(Duration::ZERO, never)
            .await
            .expect_err("times out");
        let a = unread_body(Err(elapsed), &limits);
        assert_eq!(
            (a.status, a.outcome),
            (StatusCode::REQUEST_TIMEOUT, Outcome::BodyTimeout)
        );
    }
}
