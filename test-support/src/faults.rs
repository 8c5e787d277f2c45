//! What the fault tests on the node (`tests/node_faults.rs`) observe and do besides the
//! admission load: the certificate a webhook replica presents, the API server's own count of
//! failed webhook calls, signals to a container's process, and a key pair from a CA of a user's.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::sync::watch;

use crate::node::{TRACK, Tally, admission_load, after_more_attempts};

/// Labelled pods created continuously in one namespace, counted by outcome.
pub struct Load {
    pub tally: Arc<Tally>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
    pods: Api<k8s_openapi::api::core::v1::Pod>,
}

/// A case that fails mid-load must not leave the load running into the next case.
impl Drop for Load {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Load {
    pub fn start(client: &Client, namespace: &str, sa: &str) -> Self {
        let (stop, stopped) = watch::channel(false);
        let (tally, task) = admission_load(client.clone(), namespace, sa, stopped);
        Self {
            tally,
            stop,
            task: Some(task),
            pods: Api::namespaced(client.clone(), namespace),
        }
    }

    /// Waits until `more` further pods were tried (admitted or refused).
    pub async fn after(&self, more: usize) {
        after_more_attempts(&self.tally, more, Duration::from_secs(120)).await;
    }

    /// Stops creating pods, deletes those it made (they never run: scheduling gates) and
    /// returns the count.
    pub async fn finish(mut self) -> Arc<Tally> {
        self.stop.send(true).unwrap();
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
        let labelled = ListParams::default().labels(&format!("{TRACK}=true"));
        let _ = self
            .pods
            .delete_collection(&DeleteParams::background(), &labelled)
            .await;
        self.tally.clone()
    }
}

/// Counts of a load, for a report line.
pub fn summary(t: &Tally) -> String {
    format!(
        "{} labelled pods tried, {} injected, {} admitted without injection, {} refused",
        t.attempts(),
        t.injected.load(Ordering::SeqCst),
        t.not_injected.load(Ordering::SeqCst),
        t.refused.load(Ordering::SeqCst)
    )
}

/// The refusals of a load whose message says the API server could not call the webhook.
pub fn webhook_call_failures(t: &Tally) -> Vec<String> {
    t.errors
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.contains("failed calling webhook"))
        .cloned()
        .collect()
}

/// The leaf certificate (DER) the TLS server at `addr` presents for `name`, verified against
/// the CAs of `bundle` (PEM) as the API server verifies it.
pub async fn presented_cert(addr: &str, bundle: &[u8], name: &str) -> Result<Vec<u8>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(bundle) {
        roots
            .add(ca.map_err(|e| format!("caBundle: {e}"))?)
            .map_err(|e| format!("caBundle: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let server = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
    let handshake = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        connector.connect(server, tcp).await
    };
    let tls = tokio::time::timeout(Duration::from_secs(5), handshake)
        .await
        .map_err(|_| format!("no TLS handshake with {addr} within 5 s"))?
        .map_err(|e| format!("TLS with {addr}: {e}"))?;
    let (_, conn) = tls.get_ref();
    conn.peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .ok_or_else(|| format!("{addr} presented no certificate"))
}

/// The DER of the first certificate of a PEM text.
pub fn first_der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("a PEM certificate")
        .to_vec()
}

/// The API server's own count of admissions the webhook `webhook` failed, from its /metrics:
/// (calls that failed, so the pod was refused: `apiserver_admission_webhook_rejection_count`
/// with error_type calling_webhook_error; every call: `apiserver_admission_webhook_request_total`).
pub async fn apiserver_webhook_counts(client: &Client, webhook: &str) -> (u64, u64) {
    let text = client
        .request_text(http::Request::get("/metrics").body(Vec::new()).unwrap())
        .await
        .expect("the API server's /metrics");
    let named = format!("name=\"{webhook}\"");
    let sum = |metric: &str, also: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with(&format!("{metric}{{")))
            .filter(|l| l.contains(&named) && l.contains(also))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    (
        sum(
            "apiserver_admission_webhook_rejection_count",
            "error_type=\"calling_webhook_error\"",
        ),
        sum("apiserver_admission_webhook_request_total", ""),
    )
}

/// Sends `signal` to host pid `pid` (a container's process: the node's are the host's).
pub fn signal(pid: i32, signal: libc::c_int) {
    // SAFETY: kill(2) with a pid read from the container's cgroup; no memory is shared.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {signal}): {}",
        std::io::Error::last_os_error()
    );
}

/// A CA of a user's own and a serving certificate it signed for `names`: (CA cert, CA key, cert,
/// key), PEM.
pub fn user_ca_pair(names: &[String]) -> (String, String, String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "platform team webhook CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let (ca_pem, ca_key_pem) = (ca_cert.pem(), ca_key.serialize_pem());
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(names.to_vec()).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, &names[0]);
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (ca_pem, ca_key_pem, cert.pem(), key.serialize_pem())
}
