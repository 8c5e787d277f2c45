//! Does the webhook configuration's caBundle verify the certificate the operator serves, for the
//! name the API server calls it by? The same verification the API server does (webpki).

use std::sync::Arc;

use k8s_openapi::api::admissionregistration::v1::ServiceReference;
use k8s_openapi::api::core::v1::PodSpec;
use kube::Client;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use super::super::super::checklist::Checklist;
use super::{CAT, served_cert};

pub const WHAT: &str = "the caBundle verifies the certificate the operator serves";

/// Verifies a PEM chain (leaf first) against the PEM roots, for `name`.
pub fn verify_chain(chain_pem: &[u8], roots_pem: &[u8], name: &str) -> Result<(), String> {
    let roots: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(roots_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the caBundle is not PEM certificates: {e}"))?;
    if roots.is_empty() {
        return Err("the caBundle is empty".to_string());
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the served certificate is not PEM: {e}"))?;
    let Some((leaf, intermediates)) = chain.split_first() else {
        return Err("the served certificate is empty".to_string());
    };
    let mut store = rustls::RootCertStore::empty();
    let (_, unusable) = store.add_parsable_certificates(roots);
    if store.is_empty() {
        return Err(format!(
            "none of the caBundle's {unusable} certificates is a usable CA"
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider)
        .build()
        .map_err(|e| e.to_string())?;
    let server = ServerName::try_from(name.to_string()).map_err(|e| format!("{name}: {e}"))?;
    verifier
        .verify_server_cert(leaf, intermediates, &server, &[], UnixTime::now())
        .map(|_| ())
        .map_err(|e| {
            format!("the served certificate does not verify against the caBundle for {name}: {e}")
        })
}

/// Service mode: the certificate in the Secret the operator pods serve from.
pub async fn service(
    list: &mut Checklist,
    client: &Client,
    svc: &ServiceReference,
    specs: &[PodSpec],
    ca: &[u8],
) {
    let name = format!("{}.{}.svc", svc.name, svc.namespace);
    let fix = format!(
        "let the operator rewrite it (kubectl rollout restart -n {} deployment/<the operator's deployment>), or set webhook.certificates to match the serving certificate",
        svc.namespace
    );
    match served_cert(client, &svc.namespace, specs).await {
        Ok(crt) => match verify_chain(&crt, ca, &name) {
            Ok(()) => list.pass_with(CAT, WHAT, format!("for {name}")),
            Err(e) => list.fail(CAT, WHAT, e, fix),
        },
        // Reading the Secret may be forbidden to this user; the end-to-end check still proves it.
        Err(e) => list.warn(
            CAT,
            WHAT,
            format!("not checked here: {e}"),
            "the end-to-end check below calls the webhook as the API server does".into(),
        ),
    }
}

/// URL mode: a TLS handshake with the webhook, trusting only the caBundle.
pub async fn url(list: &mut Checklist, url: &str, ca: &[u8]) {
    match handshake(url, ca).await {
        Ok(()) => list.pass_with(CAT, WHAT, format!("TLS handshake with {url}")),
        Err(e) => list.fail(
            CAT,
            WHAT,
            e,
            "put the CA of the webhook's serving certificate in clientConfig.caBundle".into(),
        ),
    }
}

async fn handshake(raw: &str, ca: &[u8]) -> Result<(), String> {
    let url = url::Url::parse(raw).map_err(|e| format!("{raw}: {e}"))?;
    let host = url
        .host_str()
        .ok_or_else(|| format!("{raw} has no host"))?
        .trim_matches(['[', ']'])
        .to_string();
    let port = url.port_or_known_default().unwrap_or(443);
    let mut store = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca) {
        let cert = cert.map_err(|e| format!("the caBundle is not PEM certificates: {e}"))?;
        store
            .add(cert)
            .map_err(|e| format!("a caBundle certificate is unusable: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(store)
        .with_no_client_auth();
    let server = ServerName::try_from(host.clone()).map_err(|e| format!("{host}: {e}"))?;
    let connect = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(server, tcp)
            .await
            .map_err(|e| format!("TLS with {host}:{port}: {e}"))
    };
    match tokio::time::timeout(std::time::Duration::from_secs(10), connect).await {
        Ok(r) => r.map(|_| ()),
        Err(_) => Err(format!("{host}:{port} did not answer within 10 s")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca(name: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        (p.self_signed(&key).unwrap(), key)
    }

    #[test]
    fn a_served_certificate_verifies_only_against_its_own_ca_and_name() {
        let (ca1, key1) = ca("one");
        let (ca2, _) = ca("two");
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let p = rcgen::CertificateParams::new(vec!["svc.ns.svc".to_string()]).unwrap();
        let issuer = rcgen::Issuer::from_ca_cert_der(ca1.der(), key1).unwrap();
        let leaf = p.signed_by(&leaf_key, &issuer).unwrap();
        let (leaf, ca1, ca2) = (leaf.pem(), ca1.pem(), ca2.pem());
        assert_eq!(
            verify_chain(leaf.as_bytes(), ca1.as_bytes(), "svc.ns.svc"),
            Ok(())
        );
        let both = format!("{ca2}{ca1}");
        assert_eq!(
            verify_chain(leaf.as_bytes(), both.as_bytes(), "svc.ns.svc"),
            Ok(()),
            "a bundle during rotation"
        );
        for (roots, name, want) in [
            (ca2.as_str(), "svc.ns.svc", "does not verify"),
            (ca1.as_str(), "other.ns.svc", "does not verify"),
            ("", "svc.ns.svc", "empty"),
        ] {
            let err = verify_chain(leaf.as_bytes(), roots.as_bytes(), name).unwrap_err();
            assert!(err.contains(want), "{name}: {err}");
        }
    }
}
