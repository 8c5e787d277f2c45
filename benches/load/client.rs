//! The client side, as the kube-apiserver talks to a webhook: TLS 1.3 (rustls), HTTP/1.1 with
//! keep-alive, one request at a time per connection, `POST <path>?timeout=10s`.

use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// Where a server listens and how to trust it.
#[derive(Clone)]
pub struct Target {
    pub port: u16,
    pub uri: String,
    pub tls: tokio_rustls::TlsConnector,
}

impl Target {
    pub fn new(port: u16, path: &str, ca_pem: &[u8]) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(ca_pem).context("reading the server's CA")?)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            port,
            uri: format!("{path}?timeout=10s"),
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    /// A new kept-alive connection, TLS handshake done.
    pub async fn connect(&self) -> anyhow::Result<Conn> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from("127.0.0.1")?;
        let tls = self.tls.connect(name, tcp).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        Ok(Conn {
            sender,
            uri: self.uri.clone(),
        })
    }
}

pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    uri: String,
}

impl Conn {
    /// Sends one review and checks its answer: 200, and a JSON patch in it.
    pub async fn review(&mut self, body: &Bytes) -> anyhow::Result<()> {
        self.answer(body).await.map(drop)
    }

    /// Sends one review and returns its answer's patch (base64), checking the answer as
    /// [`Conn::review`] does.
    pub async fn patch(&mut self, body: &Bytes) -> anyhow::Result<String> {
        let answer: serde_json::Value = serde_json::from_slice(&self.answer(body).await?)?;
        let patch = answer["response"]["patch"].as_str();
        Ok(patch
            .context("the answer's patch is not a string")?
            .to_string())
    }

    async fn answer(&mut self, body: &Bytes) -> anyhow::Result<Bytes> {
        let req = http::Request::post(self.uri.as_str())
            .header(http::header::HOST, "127.0.0.1")
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json, */*")
            .body(Full::new(body.clone()))?;
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status();
        let answer = resp.into_body().collect().await?.to_bytes();
        if status != http::StatusCode::OK {
            bail!("HTTP {status}: {}", String::from_utf8_lossy(&answer));
        }
        if !answer.windows(9).any(|w| w == b"\"patch\":\"") {
            bail!(
                "answer without a patch: {}",
                String::from_utf8_lossy(&answer)
            );
        }
        Ok(answer)
    }
}
