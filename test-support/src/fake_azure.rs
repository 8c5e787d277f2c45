//! The Azure fake (`azure`) on loopback addresses, for controller tests and benches that run the
//! operator in process: Entra ID's token endpoint and ARM's workspace GET on two HTTPS ports of
//! 127.0.0.1, with one registered identity. Both share one test CA; start the operator with it
//! as its extra trusted root.

use std::ops::Deref;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::azure::{Addresses, Core, Credential, arm, entra};
pub use crate::azure::{Reply, TOKEN_EXCHANGE_AUDIENCE};
use crate::fake_tls;

/// The operator's identity in the fake Entra ID.
#[derive(Clone, Debug)]
pub struct Identity {
    pub tenant_id: String,
    pub client_id: String,
    /// Accept this client secret.
    pub client_secret: Option<String>,
    /// Accept client assertions with this subject (a federated identity credential).
    pub federated_subject: Option<String>,
}

pub struct FakeAzure {
    core: Core,
    /// The fake Entra ID authority host (`https://127.0.0.1:<port>`).
    pub authority_url: String,
    /// The fake ARM endpoint (`https://127.0.0.1:<port>`).
    pub arm_url: String,
    /// PEM of the CA that issued both servers' certificates.
    pub ca_pem: String,
    _servers: fake_tls::Servers,
}

/// The core's workspaces, scripts and logs (`set_workspace`, `script`, `arm_calls`...).
impl Deref for FakeAzure {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.core
    }
}

impl FakeAzure {
    /// Starts both servers. `kube` reads the API server's JWKS to verify assertions.
    pub async fn start(kube: kube::Client, identity: Identity) -> Self {
        let (ca_pem, tls) = fake_tls::tls_config(&["127.0.0.1", "localhost"]);
        let acceptor = TlsAcceptor::from(std::sync::Arc::new(tls));
        let entra_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let arm_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = |l: &TcpListener| format!("https://{}", l.local_addr().unwrap());
        let (authority_url, arm_url) = (url(&entra_listener), url(&arm_listener));
        let core = Core::new(
            kube,
            Addresses {
                authority: authority_url.clone(),
                resource: arm_url.clone(),
                region: "eastus",
                echo: None,
            },
        );
        register(&core, identity);
        let entra = entra::routes().with_state(core.clone());
        let arm = arm::routes().with_state(core.clone());
        let tasks = vec![
            tokio::spawn(fake_tls::serve(entra_listener, acceptor.clone(), entra)),
            tokio::spawn(fake_tls::serve(arm_listener, acceptor, arm)),
        ];
        Self {
            core,
            authority_url,
            arm_url,
            ca_pem,
            _servers: fake_tls::Servers(tasks),
        }
    }

    /// Answers every call for `ws` with `reply` (None: normal answers again).
    pub fn always(&self, ws: &str, reply: Option<Reply>) {
        self.core.always(Some(ws), reply);
    }

    pub fn tokens_issued(&self) -> usize {
        let issued = |e: &&crate::azure::Exchange| e.status == 200;
        self.core.exchanges().iter().filter(issued).count()
    }

    /// Why token requests were refused, for assertion messages.
    pub fn token_errors(&self) -> Vec<String> {
        let exchanges = self.core.exchanges();
        exchanges.into_iter().filter_map(|e| e.error).collect()
    }
}

fn register(core: &Core, identity: Identity) {
    let Identity {
        tenant_id,
        client_id,
        client_secret,
        federated_subject,
    } = identity;
    let credentials = [
        client_secret.map(Credential::Secret),
        federated_subject.map(|s| Credential::Federated(vec![s])),
    ];
    core.register_app_without_credentials(&tenant_id, &client_id);
    for credential in credentials.into_iter().flatten() {
        core.register_app(&tenant_id, &client_id, credential);
    }
}
