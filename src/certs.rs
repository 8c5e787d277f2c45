//! Serving certificates for the webhook.
//!
//! The TLS server asks a [`CertStore`] for the certificate on every handshake, so a new
//! certificate takes effect for the next connection without restarting the listener. Two
//! sources fill the store:
//! - mounted files ([`watch_files`]), polled by content: Kubernetes updates Secret volumes by
//!   swapping a `..data` symlink, which a per-file inotify watch does not see;
//! - self-managed ([`self_managed`]): a CA and serving certificate generated with rcgen, kept in
//!   a Secret shared by all replicas, with the MutatingWebhookConfiguration's caBundle kept
//!   current and the serving certificate rotated before it expires.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no PEM certificate found in the serving certificate")]
    NoCertificate,
    #[error("the serving certificate is not valid PEM: {0}")]
    BadCertificate(String),
    #[error("the private key is not a valid PEM private key (PKCS#8, PKCS#1 or SEC1): {0}")]
    BadKey(String),
    #[error(
        "the private key's type is not supported ({0}): use an RSA, ECDSA P-256 or P-384, or Ed25519 key"
    )]
    UnsupportedKey(String),
    #[error("the private key does not match the certificate: {0}")]
    Mismatch(String),
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the serving certificate does not chain to ca.crt {0}")]
    Chain(String),
}

/// Builds a rustls certified key from PEM, checking that key and certificate belong together.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, CertError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::BadCertificate(e.to_string()))?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate);
    }
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| CertError::BadKey(e.to_string()))?;
    // Loaded apart from the match, so that a key ring cannot use (ECDSA P-521) is not reported
    // as a mismatch.
    let key = ring::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| CertError::UnsupportedKey(e.to_string()))?;
    let ck = CertifiedKey::new(chain, key);
    ck.keys_match()
        .map_err(|e| CertError::Mismatch(e.to_string()))?;
    Ok(ck)
}

/// The current serving certificate, swapped atomically; empty until the first one loads.
#[derive(Debug, Default)]
pub struct CertStore {
    current: RwLock<Option<Loaded>>,
    /// Set to the notAfter of every certificate served: both sources load through
    /// [`CertStore::set_pem`], so the one place that swaps the certificate also reports it.
    expiry: Option<Gauge>,
}

#[derive(Debug, Clone)]
struct Loaded {
    key: Arc<CertifiedKey>,
    /// The PEM it came from, to tell a real change from a re-read of the same files.
    source: (Vec<u8>, Vec<u8>),
}

impl CertStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A store that sets `expiry` to the notAfter (Unix seconds) of each certificate it serves.
    pub fn reporting_expiry_to(expiry: Gauge) -> Arc<Self> {
        Arc::new(Self {
            expiry: Some(expiry),
            ..Self::default()
        })
    }

    /// True once a certificate is loaded (readiness).
    pub fn is_loaded(&self) -> bool {
        self.current.read().map(|c| c.is_some()).unwrap_or(false)
    }

    /// Loads `cert_pem`/`key_pem` unless they are what is already served. Returns whether the
    /// served certificate changed. A bad pair leaves the current certificate in place.
    pub fn set_pem(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<bool, CertError> {
        if let Ok(cur) = self.current.read()
            && let Some(cur) = cur.as_ref()
            && cur.source.0 == cert_pem
            && cur.source.1 == key_pem
        {
            return Ok(false);
        }
        let key = Arc::new(certified_key(cert_pem, key_pem)?);
        if let Some(gauge) = &self.expiry {
            gauge.set(not_after(&key.cert[0])?);
        }
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        *cur = Some(Loaded {
            key,
            source: (cert_pem.to_vec(), key_pem.to_vec()),
        });
        Ok(true)
    }

    fn get(&self) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok()?.as_ref().map(|l| l.key.clone())
    }

    /// A rustls server config (TLS 1.2 and 1.3 only, h2 and http/1.1) that serves from this store.
    pub fn server_config(self: &Arc<Self>) -> rustls::ServerConfig {
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .expect("ring supports TLS 1.2 and 1.3")
                .with_no_client_auth()
                .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.get()
    }
}

/// The notAfter of a DER certificate, in Unix seconds.
fn not_after(cert: &CertificateDer<'_>) -> Result<i64, CertError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| CertError::BadCertificate(e.to_string()))?;
    Ok(parsed.validity().not_after.timestamp())
}

async fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    tokio::fs::read(path)
        .await
        .map_err(|source| CertError::Read {
            path: path.to_path_buf(),
            source,
        })
}

/// Loads the certificate files once (fails if they are unusable now).
pub async fn load_files(store: &CertStore, cert: &Path, key: &Path) -> Result<bool, CertError> {
    let (c, k) = (read(cert).await?, read(key).await?);
    store.set_pem(&c, &k)
}

/// Re-reads the certificate files every `every` and serves them when their content changed.
/// Reading through the paths (not watching inodes) follows Secret volume symlink swaps.
pub async fn watch_files(store: Arc<CertStore>, cert: PathBuf, key: PathBuf, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match load_files(&store, &cert, &key).await {
            Ok(true) => tracing::info!(cert = %cert.display(), "serving a new webhook certificate"),
            Ok(false) => {}
            // Mid-swap reads can see a new cert with an old key; the next tick settles it.
            Err(e) => {
                tracing::warn!(error = %e, "webhook certificate files not usable; keeping the current one")
            }
        }
    }
}

/// A CA and serving certificate pair in PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pems {
    pub ca_cert: String,
    pub ca_key: String,
    pub cert: String,
    pub key: String,
    /// Unix seconds after which the serving certificate is no longer valid.
    pub not_after: i64,
}

const CA_NAME: &str = "mlflow-operator-webhook-ca";

fn ca_params() -> rcgen::CertificateParams {
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, CA_NAME);
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    p
}

/// Generates a new CA (valid `ca_days`) and a serving certificate for `names` (DNS names or IPs,
/// valid `leaf_days`).
pub fn generate(
    names: &[String],
    ca_days: i64,
    leaf_days: i64,
    now: i64,
) -> Result<Pems, CertError> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut params = ca_params();
    params.not_before = at(now - 3600);
    params.not_after = at(now + ca_days * 86400);
    let ca_cert = params.self_signed(&ca_key)?;
    let ca_pem = ca_cert.pem();
    let ca_key_pem = ca_key.serialize_pem();
    issue(&ca_pem, &ca_key_pem, names, leaf_days, now)
}

/// Issues a new serving certificate from an existing CA.
pub fn issue(
    ca_pem: &str,
    ca_key_pem: &str,
    names: &[String],
    leaf_days: i64,
    now: i64,
) -> Result<Pems, CertError> {
    let ca_key = rcgen::KeyPair::from_pem(ca_key_pem)?;
    // Subject and key identifier from the CA certificate itself: a CA written into the Secret
    // by someone else has its own, and a leaf naming another issuer would not chain to it.
    let issuer = rcgen::Issuer::from_ca_cert_pem(ca_pem, ca_key)?;
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        names
            .first()
            .map(String::as_str)
            .unwrap_or("mlflow-operator"),
    );
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = at(now - 3600);
    let not_after = now + leaf_days * 86400;
    params.not_after = at(not_after);
    let key = rcgen::KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Pems {
        ca_cert: ca_pem.to_string(),
        ca_key: ca_key_pem.to_string(),
        cert: cert.pem(),
        key: key.serialize_pem(),
        not_after,
    })
}

/// Checks that the serving certificate of `pems` chains to its CA for `name`, as a TLS client
/// trusting only that CA would: a pair that does not is never served.
pub fn verify_chain(pems: &Pems, name: &str) -> Result<(), CertError> {
    use rustls::client::danger::ServerCertVerifier;
    let bad = |e: String| CertError::Chain(e);
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(pems.ca_cert.as_bytes()) {
        roots
            .add(ca.map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
    }
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(ring::default_provider()),
    )
    .build()
    .map_err(|e| bad(e.to_string()))?;
    let mut chain = CertificateDer::pem_slice_iter(pems.cert.as_bytes());
    let leaf = chain
        .next()
        .ok_or(CertError::NoCertificate)?
        .map_err(|e| CertError::BadCertificate(e.to_string()))?;
    let intermediates: Vec<_> = chain.filter_map(Result::ok).collect();
    let server = rustls::pki_types::ServerName::try_from(name.to_string())
        .map_err(|e| bad(e.to_string()))?;
    let now = rustls::pki_types::UnixTime::now();
    verifier
        .verify_server_cert(&leaf, &intermediates, &server, &[], now)
        .map(|_| ())
        .map_err(|e| bad(format!("for {name}: {e}")))
}

fn at(unix: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

pub mod probe;
pub mod self_managed;

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> i64 {
        1_800_000_000
    }

    #[test]
    fn generated_pair_loads_and_is_served() {
        let pems = generate(&["localhost".into(), "127.0.0.1".into()], 3650, 365, now()).unwrap();
        let store = CertStore::new();
        assert!(!store.is_loaded());
        assert!(
            store
                .set_pem(pems.cert.as_bytes(), pems.key.as_bytes())
                .unwrap()
        );
        assert!(store.is_loaded());
        // The same content again is not a change.
        assert!(
            !store
                .set_pem(pems.cert.as_bytes(), pems.key.as_bytes())
                .unwrap()
        );
    }

    #[test]
    fn the_expiry_gauge_follows_the_served_certificate() {
        let gauge = Gauge::default();
        let store = CertStore::reporting_expiry_to(gauge.clone());
        assert_eq!(gauge.get(), 0, "nothing served yet");
        let first = generate(&["localhost".into()], 3650, 30, now()).unwrap();
        store
            .set_pem(first.cert.as_bytes(), first.key.as_bytes())
            .unwrap();
        assert_eq!(gauge.get(), first.not_after);
        let rotated = generate(&["localhost".into()], 3650, 90, now()).unwrap();
        store
            .set_pem(rotated.cert.as_bytes(), rotated.key.as_bytes())
            .unwrap();
        assert_eq!(gauge.get(), rotated.not_after);
        // A refused pair is not served, so it does not move the gauge either.
        let _ = store.set_pem(first.cert.as_bytes(), rotated.key.as_bytes());
        assert_eq!(gauge.get(), rotated.not_after);
    }

    #[test]
    fn bad_material_is_refused_and_the_current_certificate_kept() {
        let a = generate(&["localhost".into()], 10, 5, now()).unwrap();
        let b = generate(&["localhost".into()], 10, 5, now()).unwrap();
        let store = CertStore::new();
        store.set_pem(a.cert.as_bytes(), a.key.as_bytes()).unwrap();
        for (cert, key, what) in [
            ("", a.key.as_str(), "no PEM certificate"),
            ("garbage", a.key.as_str(), "no PEM certificate"),
            (a.cert.as_str(), "garbage", "private key"),
            (a.cert.as_str(), b.key.as_str(), "does not match"),
            (a.cert.as_str(), &p521_key(), "not supported"),
        ] {
            let err = store
                .set_pem(cert.as_bytes(), key.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.contains(what), "{err}");
            assert!(store.is_loaded());
        }
    }

    /// An ECDSA P-521 key (cert-manager's `privateKey.size: 521`), which ring does not sign with.
    fn p521_key() -> String {
        use aws_lc_rs::signature::{ECDSA_P521_SHA512_ASN1_SIGNING, EcdsaKeyPair};
        let key = EcdsaKeyPair::generate(&ECDSA_P521_SHA512_ASN1_SIGNING).unwrap();
        use base64::Engine;
        let der = base64::engine::general_purpose::STANDARD.encode(key.to_pkcs8v1().unwrap());
        format!("-----BEGIN PRIVATE KEY-----\n{der}\n-----END PRIVATE KEY-----\n")
    }

    /// A CA made elsewhere (another subject, a SHA-1 key identifier): a re-issued leaf used to
    /// name the operator's own CA as issuer and not chain to it.
    #[test]
    fn a_leaf_reissued_from_a_ca_made_elsewhere_chains_to_it() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "platform team CA");
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        p.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(vec![7; 20]);
        let ca = p.self_signed(&key).unwrap();
        let now = jiff::Timestamp::now().as_second();
        let names = ["svc.ns.svc".to_string()];
        let pems = issue(&ca.pem(), &key.serialize_pem(), &names, 30, now).unwrap();
        verify_chain(&pems, "svc.ns.svc").expect("chains to the CA it was issued from");
        let other = generate(&names, 10, 5, now).unwrap();
        let mixed = Pems {
            ca_cert: other.ca_cert,
            ..pems
        };
        let err = verify_chain(&mixed, "svc.ns.svc").unwrap_err().to_string();
        assert!(err.contains("does not chain"), "{err}");
    }

    #[test]
    fn reissued_leaf_chains_to_the_same_ca() {
        let first = generate(&["svc.ns.svc".into()], 3650, 365, now()).unwrap();
        let second = issue(
            &first.ca_cert,
            &first.ca_key,
            &["svc.ns.svc".into()],
            365,
            now() + 100,
        )
        .unwrap();
        assert_eq!(first.ca_cert, second.ca_cert);
        assert_ne!(first.cert, second.cert);
        // Verify the chain with webpki, as a TLS client would.
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(second.ca_cert.as_bytes()).unwrap())
            .unwrap();
        use rustls::client::danger::ServerCertVerifier;
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(ring::default_provider()),
        )
        .build()
        .unwrap();
        let leaf = CertificateDer::from_pem_slice(second.cert.as_bytes()).unwrap();
        let name = rustls::pki_types::ServerName::try_from("svc.ns.svc").unwrap();
        let when = rustls::pki_types::UnixTime::since_unix_epoch(Duration::from_secs(
            (now() + 200) as u64,
        ));
        verifier
            .verify_server_cert(&leaf, &[], &name, &[], when)
            .expect("leaf verifies against the CA");
    }
}
