//! The webhook server is bounded against hostile or broken clients, on its real HTTPS listener:
//! stalled headers and bodies are cut off, connections past the limit are closed at once, a
//! client that reads one byte at a time holds up nobody, and shutdown drains in-flight reviews.
//! Each test runs with short limits so the bounds show within seconds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mlflow_operator::certs::{self, CertStore};
use mlflow_operator::inject::Defaults;
use mlflow_operator::webhook::{self, Limits, Webhook};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::client::TlsStream;

const REVIEW: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-1","kind":{"group":"","version":"v1","kind":"Pod"},"namespace":"ns","operation":"DELETE","object":null}}"#;

struct Server {
    port: u16,
    ca: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
    _writers: Box<dyn std::any::Any + Send>,
}

fn short_limits() -> Limits {
    Limits {
        handshake: Duration::from_secs(2),
        header_read: Duration::from_secs(2),
        body_read: Duration::from_secs(2),
        request: Duration::from_secs(5),
        max_connections: 64,
        h2_max_streams: 16,
        drain: Duration::from_secs(5),
    }
}

async fn serve(limits: Limits) -> Server {
    let pems = certs::generate(
        &["127.0.0.1".into()],
        30,
        10,
        jiff::Timestamp::now().as_second(),
    )
    .unwrap();
    let store = CertStore::new();
    store
        .set_pem(pems.cert.as_bytes(), pems.key.as_bytes())
        .unwrap();
    let bindings = mlflow_operator::webhook::BindingIndex::from_objects([]);
    let (sas, w2) = kube::runtime::reflector::store();
    let wh = Arc::new(Webhook::cached(bindings, sas, Defaults::default()));
    let listener = webhook::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(webhook::serve_with(
        listener,
        wh,
        store,
        limits,
        async move {
            let _ = rx.await;
        },
    ));
    Server {
        port,
        ca: pems.ca_cert,
        stop: Some(tx),
        done,
        _writers: Box::new(w2),
    }
}

async fn connect(s: &Server) -> TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", s.port))
        .await
        .unwrap();
    mlflow_operator_test_support::fake_tls::connector(&s.ca)
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .expect("TLS handshake")
}

fn post(body: &str) -> String {
    format!(
        "POST /mutate HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Reads until the server closes; the text it sent (empty when it sent nothing).
async fn read_to_close(tls: &mut TlsStream<tokio::net::TcpStream>, within: Duration) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(within, tls.read_to_end(&mut out)).await;
    assert!(
        read.is_ok(),
        "the server kept the connection open for more than {within:?}"
    );
    String::from_utf8_lossy(&out).into_owned()
}

/// A well-behaved client's whole exchange: its status line.
async fn answered(s: &Server) -> String {
    let mut tls = connect(s).await;
    tls.write_all(post(REVIEW).as_bytes()).await.unwrap();
    let text = read_to_close(&mut tls, Duration::from_secs(5)).await;
    text.lines().next().unwrap_or_default().to_string()
}

#[tokio::test]
async fn rejects_stalled_headers_by_closing_and_keeps_answering_others() {
    let s = serve(short_limits()).await;
    let mut stalled = connect(&s).await;
    stalled
        .write_all(b"POST /mutate HTTP/1.1\r\nhost: 127.0.0.1\r\n")
        .await
        .unwrap();
    assert_eq!(
        answered(&s).await,
        "HTTP/1.1 200 OK",
        "another client is served meanwhile"
    );
    let started = Instant::now();
    let text = read_to_close(&mut stalled, Duration::from_secs(10)).await;
    assert!(
        !text.starts_with("HTTP/1.1 200"),
        "a stalled request is never answered: {text}"
    );
    println!("stalled headers cut after {:?}", started.elapsed());
}

#[tokio::test]
async fn rejects_a_stalled_body_with_408() {
    let s = serve(short_limits()).await;
    let mut tls = connect(&s).await;
    let head = "POST /mutate HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"apiVersion\"";
    tls.write_all(head.as_bytes()).await.unwrap();
    let text = read_to_close(&mut tls, Duration::from_secs(10)).await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("did not arrive within"), "{text}");
}

/// Whether the server closed `c` (end of stream or reset) within `within`.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(c: &mut S, within: Duration) -> bool {
    let mut buf = [0u8; 1];
    matches!(
        tokio::time::timeout(within, c.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn idle_connections_past_the_limit_make_room_for_new_ones_and_clients_are_served() {
    let limits = short_limits();
    let max = limits.max_connections;
    let s = serve(limits).await;
    // Idle TCP connections that never start TLS: past the limit, each new one takes the place
    // of the longest idle one, so the limit holds and the newest are kept.
    let mut idle = Vec::new();
    for _ in 0..max * 4 {
        idle.push(
            tokio::net::TcpStream::connect(("127.0.0.1", s.port))
                .await
                .unwrap(),
        );
    }
    assert_eq!(
        answered(&s).await,
        "HTTP/1.1 200 OK",
        "a client is served while the idle connections are held"
    );
    let outcomes = futures::future::join_all(
        idle.iter_mut()
            .map(|c| closed_within(c, Duration::from_millis(300))),
    )
    .await;
    let closed = outcomes.iter().filter(|c| **c).count();
    // The client above took one more idle connection's place.
    assert_eq!(closed, max * 3 + 1, "closed of {} (limit {max})", max * 4);
    assert!(
        outcomes[..max * 3].iter().all(|c| *c),
        "the oldest are the ones closed"
    );
}

#[tokio::test]
async fn rejects_a_connection_at_once_when_every_connection_is_busy() {
    let limits = short_limits();
    let max = limits.max_connections;
    let s = serve(limits).await;
    // Requests whose bodies stall are in progress: their connections cannot make room.
    let mut busy = Vec::new();
    for _ in 0..max {
        let mut tls = connect(&s).await;
        let head = "POST /mutate HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 1000\r\nexpect: 100-continue\r\n\r\n";
        tls.write_all(head.as_bytes()).await.unwrap();
        let mut cont = [0u8; 25];
        tls.read_exact(&mut cont).await.unwrap();
        assert!(cont.starts_with(b"HTTP/1.1 100 Continue"));
        busy.push(tls);
    }
    let mut extra = tokio::net::TcpStream::connect(("127.0.0.1", s.port))
        .await
        .unwrap();
    assert!(
        closed_within(&mut extra, Duration::from_secs(2)).await,
        "a connection past the limit with every connection busy is closed at once"
    );
    // The stalled bodies time out (408) and service resumes.
    for tls in busy.iter_mut() {
        let text = read_to_close(tls, Duration::from_secs(10)).await;
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    }
    eventually_served(
        "a client to be served once the stalled requests are cut",
        &s,
    )
    .await;
}

/// Waits, with a deadline, until the server no longer accepts connections.
async fn refused_after_shutdown(s: &Server) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(("127.0.0.1", s.port))
        .await
        .is_ok()
    {
        assert!(Instant::now() < deadline, "still accepting after shutdown");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls with a fresh client until one is answered, or fails after a deadline.
async fn eventually_served(what: &str, s: &Server) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let attempt = tokio::time::timeout(Duration::from_secs(3), answered(s)).await;
        if matches!(attempt.as_deref(), Ok("HTTP/1.1 200 OK")) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_client_reading_one_byte_at_a_time_holds_up_nobody() {
    let s = serve(short_limits()).await;
    let mut slow = connect(&s).await;
    slow.write_all(post(REVIEW).as_bytes()).await.unwrap();
    let mut first = [0u8; 1];
    slow.read_exact(&mut first).await.unwrap();
    for _ in 0..20 {
        assert_eq!(answered(&s).await, "HTTP/1.1 200 OK");
        let mut b = [0u8; 1];
        slow.read_exact(&mut b).await.unwrap();
    }
    let rest = read_to_close(&mut slow, Duration::from_secs(5)).await;
    assert!(
        rest.contains("\"allowed\":true"),
        "the slow reader gets its whole answer: {rest}"
    );
}

#[tokio::test]
async fn shutdown_drains_a_review_in_flight_and_accepts_no_more() {
    let mut s = serve(short_limits()).await;
    let mut tls = connect(&s).await;
    // `Expect: 100-continue` shows when the server is reading this request: then it is in flight.
    let head = format!(
        "POST /mutate HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\nexpect: 100-continue\r\nconnection: close\r\n\r\n",
        REVIEW.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let mut cont = [0u8; 25];
    tls.read_exact(&mut cont).await.unwrap();
    assert!(
        cont.starts_with(b"HTTP/1.1 100 Continue"),
        "{}",
        String::from_utf8_lossy(&cont)
    );
    s.stop.take().unwrap().send(()).unwrap();
    // New connections are refused once the listener is gone.
    refused_after_shutdown(&s).await;
    tls.write_all(REVIEW.as_bytes()).await.unwrap();
    let text = read_to_close(&mut tls, Duration::from_secs(5)).await;
    assert!(
        text.starts_with("HTTP/1.1 200 OK"),
        "the in-flight review is answered: {text}"
    );
    tokio::time::timeout(Duration::from_secs(10), s.done)
        .await
        .unwrap()
        .unwrap();
}

/// The API server speaks HTTP/1.1 to webhooks and keeps idle connections in a pool: one closed
/// under it at shutdown could fail a pod's admission. While draining, a pooled connection's next
/// request is still answered, with `Connection: close`.
#[tokio::test]
async fn a_kept_alive_connection_is_answered_during_the_drain_and_told_to_close() {
    use http_body_util::{BodyExt, Full};
    let mut s = serve(short_limits()).await;
    let tls = connect(&s).await;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = || {
        http::Request::post("/mutate")
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .body(Full::new(bytes::Bytes::from_static(REVIEW.as_bytes())))
            .unwrap()
    };
    let first = sender.send_request(request()).await.unwrap();
    assert_eq!(first.status(), 200);
    assert!(
        first.headers().get("connection").is_none(),
        "kept alive before shutdown"
    );
    first.into_body().collect().await.unwrap();

    s.stop.take().unwrap().send(()).unwrap();
    refused_after_shutdown(&s).await;
    let second = sender
        .send_request(request())
        .await
        .expect("the pooled connection still answers");
    assert_eq!(second.status(), 200);
    assert_eq!(
        second
            .headers()
            .get("connection")
            .map(|v| v.to_str().unwrap()),
        Some("close")
    );
    tokio::time::timeout(Duration::from_secs(10), s.done)
        .await
        .unwrap()
        .unwrap();
}
