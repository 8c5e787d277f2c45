//! Azure's cloud endpoints, faked in the test process and reached by pods on the real node under
//! their real names (CoreDNS serves `CLUSTER_HOSTS_FILE`, or a pod's own `hostAliases` map them:
//! [`host_aliases`]; the addresses are on the node). The Entra ID token endpoint and ARM are the
//! shared core (`azure`); this mode adds:
//!
//! - Entra ID's discovery documents MSAL reads first (`discovery`);
//! - IMDS for managed identities, `http://169.254.169.254` (`imds`);
//! - the Azure ML MLflow front door with its SAS uploads (`front_door`);
//! - the host names in the cluster's DNS and the fakes' CA in a ConfigMap (`dns`).
//!
//! Each service keeps a request log, and every credential that crossed the fakes is kept for
//! the log sweep (`secrets_seen`).

mod discovery;
mod dns;
mod front_door;
mod imds;

use std::ops::Deref;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::azure::{Addresses, Core, arm, entra};
pub use crate::azure::{Call, Credential, Exchange, Reply, Seen, TOKEN_EXCHANGE_AUDIENCE};
use crate::fake_tls;
pub use dns::{ca_configmap, map_hosts, unmap_hosts};

pub const ENTRA_HOST: &str = "login.microsoftonline.com";
pub const ARM_HOST: &str = "management.azure.com";
pub const AML_HOST: &str = "westeurope.api.azureml.ms";
pub const ENTRA_IP: &str = "10.250.0.10";
pub const ARM_IP: &str = "10.250.0.11";
pub const AML_IP: &str = "10.250.0.12";
pub const IMDS_IP: &str = "169.254.169.254";
/// The resource every token here is for.
pub const ARM_RESOURCE: &str = "https://management.azure.com";

/// The node addresses the fakes listen on (`tests/cluster/up` puts `CLUSTER_TEST_HOST_IPS` on
/// the node). Two test processes running at once each need their own.
#[derive(Clone, Copy, Debug)]
pub struct NodeIps {
    pub entra: &'static str,
    pub arm: &'static str,
    pub aml: &'static str,
    /// IMDS; None: not served (only managed identity asks it).
    pub imds: Option<&'static str>,
}

/// The addresses [`FakeCloud::start`] listens on, and those the cluster's DNS maps the host
/// names to ([`map_hosts`]).
pub const DNS_MAPPED_IPS: NodeIps = NodeIps {
    entra: ENTRA_IP,
    arm: ARM_IP,
    aml: AML_IP,
    imds: Some(IMDS_IP),
};

/// The running fakes; the servers stop when this is dropped.
pub struct FakeCloud {
    core: Core,
    /// PEM of the CA that issued the servers' certificate (names: the real hosts).
    pub ca_pem: String,
    _servers: fake_tls::Servers,
}

/// The core's apps, workspaces and logs (`register_app`, `exchanges`, `request_log`...).
impl Deref for FakeCloud {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.core
    }
}

async fn bind(ip: &str, port: u16) -> TcpListener {
    let addr = format!("{ip}:{port}");
    TcpListener::bind(&addr).await.unwrap_or_else(|e| {
        panic!(
            "bind {addr}: {e} (run inside the cluster's network namespace: \
             tests/cluster/exec; CLUSTER_TEST_HOST_IPS are on the node)"
        )
    })
}

impl FakeCloud {
    /// Starts the four services on the addresses the cluster's DNS maps the host names to
    /// ([`DNS_MAPPED_IPS`]); the front door forwards to the `mlflow server --serve-artifacts` at
    /// `mlflow_url`.
    pub async fn start(kube: kube::Client, mlflow_url: &str) -> Self {
        Self::start_on(kube, mlflow_url, &DNS_MAPPED_IPS).await
    }

    /// [`FakeCloud::start`] on the addresses `ips`, for pods that map the host names to them
    /// themselves ([`host_aliases`]).
    pub async fn start_on(kube: kube::Client, mlflow_url: &str, ips: &NodeIps) -> Self {
        let (ca_pem, tls) = fake_tls::tls_config(&[ENTRA_HOST, ARM_HOST, AML_HOST]);
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let addresses = Addresses {
            authority: format!("https://{ENTRA_HOST}"),
            resource: ARM_RESOURCE.into(),
            region: "westeurope",
            echo: Some("fake cloud"),
        };
        let core = Core::new(kube, addresses);
        let front_door = front_door::FrontDoor {
            core: core.clone(),
            sas_key: crate::azure::random_key("sas"),
            mlflow_url: mlflow_url.trim_end_matches('/').to_string(),
            http: crate::http_client(),
        };
        let entra = entra::routes()
            .route("/common/discovery/instance", get(discovery::instance))
            .route(
                "/{tenant}/v2.0/.well-known/openid-configuration",
                get(discovery::openid_configuration),
            )
            .fallback(not_found_logged);
        let imds: Router<Core> = Router::new()
            .route("/metadata/identity/oauth2/token", get(imds::token))
            .fallback(not_found_logged);
        let front_door = Router::new()
            .fallback(front_door::serve)
            .with_state(front_door);
        let tls = |l, router| tokio::spawn(fake_tls::serve(l, acceptor.clone(), router));
        let mut tasks = vec![
            tls(bind(ips.entra, 443).await, entra.with_state(core.clone())),
            tls(
                bind(ips.arm, 443).await,
                arm::routes().with_state(core.clone()),
            ),
            tls(bind(ips.aml, 443).await, front_door),
        ];
        if let Some(ip) = ips.imds {
            let imds = imds.with_state(core.clone());
            tasks.push(tokio::spawn(plain(bind(ip, 80).await, imds)));
        }
        Self {
            core,
            ca_pem,
            _servers: fake_tls::Servers(tasks),
        }
    }

    /// `IP name` lines for the cluster's hosts file.
    pub fn hosts_lines() -> String {
        format!("{ENTRA_IP} {ENTRA_HOST}\n{ARM_IP} {ARM_HOST}\n{AML_IP} {AML_HOST}\n")
    }

    /// Creates an Azure ML workspace; ARM answers its `mlFlowTrackingUri`, which is returned.
    pub fn add_workspace(&self, sub: &str, rg: &str, ws: &str) -> String {
        let uri = format!(
            "azureml://{AML_HOST}/mlflow/v1.0/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.MachineLearningServices/workspaces/{ws}"
        );
        self.core.set_workspace(sub, rg, ws, &uri);
        uri
    }

    /// Answers every ARM workspace GET (after its bearer and api-version checks) with `reply`;
    /// None: normal answers again.
    pub fn set_arm_reply(&self, reply: Option<Reply>) {
        self.core.always(None, reply);
    }
}

/// A pod's `hostAliases` mapping the real host names to the fakes on `ips`, so that the pod
/// reaches them without the cluster's DNS, whose mapping ([`map_hosts`]) belongs to the process
/// that made it. The three names are every host a client is handed: the workspace's tracking URI
/// and the front door's SAS upload URLs are on the front door's own name, and the token
/// endpoint and discovery documents on Entra ID's.
pub fn host_aliases(ips: &NodeIps) -> Value {
    json!([
        {"ip": ips.entra, "hostnames": [ENTRA_HOST]},
        {"ip": ips.arm, "hostnames": [ARM_HOST]},
        {"ip": ips.aml, "hostnames": [AML_HOST]},
    ])
}

async fn plain(listener: TcpListener, router: Router) {
    let _ = axum::serve(listener, router).await;
}

/// A service principal's certificate: a self-signed RSA certificate and its key, as the PEM
/// azure-identity reads (`AZURE_CLIENT_CERTIFICATE_PATH`: certificate and key in one file), and
/// the credential the fake Entra ID checks assertions with.
pub fn service_principal_certificate(client_id: &str) -> (String, Credential) {
    use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
    use rcgen::{CertificateParams, DnType, KeyPair};
    // The operator's rcgen signs with ring, which cannot generate RSA keys: aws-lc-rs (the fakes'
    // own crypto) makes it.
    let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let pkcs8: Pkcs8V1Der<'static> = rsa.as_der().expect("an RSA key as PKCS#8");
    let key =
        KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8.as_ref().into(), &rcgen::PKCS_RSA_SHA256)
            .expect("an RSA key rcgen signs with");
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("sp-{client_id}"));
    let cert = params.self_signed(&key).unwrap();
    let pem = format!("{}{}", cert.pem(), key.serialize_pem());
    let credential = Credential::Certificate {
        der: cert.der().to_vec(),
        public_key_der: key.public_key_raw().to_vec(),
    };
    (pem, credential)
}

async fn not_found_logged(State(core): State<Core>, method: Method, uri: Uri) -> Response {
    core.line(format!("{method} {uri} 404 (not faked)"));
    let why = format!("{} is not faked", uri.path());
    (StatusCode::NOT_FOUND, why).into_response()
}
