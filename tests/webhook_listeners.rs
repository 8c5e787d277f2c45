//! What the real `mlflow-operator run` process listens on, and what it answers there: the
//! webhook port speaks TLS 1.2 and 1.3 only (a TLS 1.0 or 1.1 ClientHello gets a
//! `protocol_version` alert, plain HTTP no answer at all), and no other listening socket of the
//! process admits anything: each is found from /proc (the process's socket inodes joined with
//! the LISTEN rows of /proc/net/tcp and tcp6) and sent `POST /mutate` in plain HTTP.

use mlflow_operator_test_support as common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::operator::OperatorProcess;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const REVIEW: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-1","kind":{"group":"","version":"v1","kind":"Pod"},"namespace":"ns","operation":"DELETE","object":null}}"#;
/// TLS alert record type and the `protocol_version` alert (RFC 8446 §6).
const ALERT: u8 = 0x15;
const PROTOCOL_VERSION: u8 = 70;

/// A ClientHello record offering only `version` (0x0301 TLS 1.0, 0x0302 TLS 1.1): no
/// supported_versions extension, and otherwise what the server accepts (ECDHE with AES-GCM, the
/// usual curves and signature schemes), so the version alone is why it is refused.
fn legacy_client_hello(version: u16) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    body.extend([0x42; 32]);
    body.push(0);
    let suites: [u16; 4] = [0xc02b, 0xc02f, 0xc013, 0xc009];
    body.extend(((suites.len() * 2) as u16).to_be_bytes());
    suites.iter().for_each(|s| body.extend(s.to_be_bytes()));
    body.extend([1, 0]);
    let extensions = [
        0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x1d, 0x00, 0x17, // supported_groups
        0x00, 0x0b, 0x00, 0x02, 0x01, 0x00, // ec_point_formats
        0x00, 0x0d, 0x00, 0x08, 0x00, 0x06, 0x04, 0x03, 0x08, 0x04, 0x04,
        0x01, // signature_algorithms
    ];
    body.extend((extensions.len() as u16).to_be_bytes());
    body.extend(extensions);
    let mut handshake = vec![0x01];
    handshake.extend(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend(body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend((handshake.len() as u16).to_be_bytes());
    record.extend(handshake);
    record
}

/// Sends `bytes` on a fresh connection to `port`; everything the server sends back before it
/// closes (or within 5 s).
async fn exchange(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    out
}

fn plain_post() -> String {
    format!(
        "POST /mutate HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{REVIEW}",
        REVIEW.len()
    )
}

/// The TCP ports `pid` listens on: its socket inodes (/proc/<pid>/fd) joined with the LISTEN
/// (state 0A) rows of /proc/net/tcp and /proc/net/tcp6 of its network namespace.
fn listening_ports(pid: u32) -> BTreeSet<u16> {
    let inodes: BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let t = target.to_string_lossy();
            Some(t.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let mut ports = BTreeSet::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap();
        for row in text.lines().skip(1) {
            let cols: Vec<&str> = row.split_whitespace().collect();
            if cols.len() > 9 && cols[3] == "0A" && inodes.contains(cols[9]) {
                let port = cols[1].rsplit(':').next().unwrap();
                ports.insert(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports
}

#[tokio::test]
async fn rejects_tls_1_0_1_1_and_plain_http_and_no_other_listener_admits() {
    let dir = tempfile::tempdir().unwrap();
    let (op, ca, port) = OperatorProcess::webhook_only(dir.path()).await;

    for (name, version) in [("TLS 1.0", 0x0301), ("TLS 1.1", 0x0302)] {
        let answer = exchange(port, &legacy_client_hello(version)).await;
        assert!(
            answer.len() >= 7 && answer[0] == ALERT && answer[6] == PROTOCOL_VERSION,
            "{name}: a protocol_version alert, never a ServerHello; got {answer:02x?}"
        );
    }
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
        .unwrap();
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap_or_else(|e| panic!("{version:?} handshake: {e}"));
        tls.write_all(plain_post().as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = tls.read_to_end(&mut out).await;
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.starts_with("HTTP/1.1 200") && text.contains("\"allowed\":true"),
            "{version:?}: {text}"
        );
    }

    let ports = listening_ports(op.pid());
    assert_eq!(
        ports,
        BTreeSet::from([port, op.metrics_port]),
        "the process listens on the webhook and metrics ports only"
    );
    for p in &ports {
        let raw = exchange(*p, plain_post().as_bytes()).await;
        let answer = String::from_utf8_lossy(&raw).into_owned();
        let first = match raw.first() {
            Some(&ALERT) => format!("a TLS alert, description {}", raw.get(6).unwrap_or(&0)),
            Some(_) => answer.lines().next().unwrap_or_default().to_string(),
            None => "closed, no answer".into(),
        };
        let role = if *p == port { "webhook" } else { "metrics" };
        println!("plain POST /mutate to port {p} ({role}): {first}");
        assert!(
            !answer.contains("AdmissionReview") && !answer.contains("\"allowed\""),
            "port {p} admitted in plain HTTP: {answer}"
        );
        if *p == port {
            assert!(
                !answer.starts_with("HTTP/"),
                "the webhook port answers plain HTTP: {answer}"
            );
        }
    }
}
